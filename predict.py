"""Use what you trained: predictions from a run folder, an --export folder or a Hub repo this project pushed.

    python predict.py runs/demo-sst2 --text "a gripping, funny film" --text "dull"
    python predict.py runs/NAME --file sentences.txt --out preds.jsonl    # .txt (a sentence a line), .tsv/.csv/.jsonl
    python predict.py runs/squad-NAME --question "Who wrote it?" --context "It was written by ..."
    python predict.py runs/squad-NAME --file dev-v2.0.json --jsonl        # SQuAD JSON, or JSONL of {question, context}
    python predict.py user/repo --text "..."                              # a pushed repo, fetched into the Hub cache
    echo "a gripping, funny film" | python predict.py runs/demo-sst2      # stdin: a sentence (or QA JSON object) a line

The task and everything that shapes the inputs (tokenisation, pooling, windows, the no-answer threshold, the
training mode and its adapters or blocks) come from the source itself. A run folder is rebuilt as train_qa.py's
--eval-run rebuilds it, so its test set gives the run's own test predictions. One JSON object per input: the
label and the probability of every label; or the answer, its character offsets in the context ("" and null when
the no-answer score wins) and the no-answer probability under the threshold. On a terminal: one readable line each.
"""
import argparse
import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import flags
import hub
import model
import train_cls
import train_qa
from data.fetch import write_atomic
from data.labelled import DataError, _rows
from data.squad import predictions
from data.squad_json import Example, load_squad
from modes import Mode
from rundir import RunDir

TASK_OF_RUN = {"sst2": "cls", "squad_v2": "qa"}
TASK_OF_ARCH = {"LlamaForSequenceClassification": "cls", "LlamaForQuestionAnswering": "qa"}
RUN_FILES = ("config.json", "metrics.json", "head.safetensors")
ADVICE = "pass a run folder (runs/NAME), an --export folder, or the id of a Hub repo this project pushed"


class SourceError(model.ModelError):
    """SOURCE is no run, export or pushed repo this script can read (a user error: one line, exit code 2)."""


def parse_args(argv=None) -> argparse.Namespace:
    p = flags.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="run folder, --export folder, or Hub repo id (user/repo)")
    p.add_argument("--text", action="append", default=[], help="a sentence to classify (repeatable)")
    p.add_argument("--question", action="append", default=[], help="QA: a question (repeatable, with --context)")
    p.add_argument("--context", action="append", default=[], help="QA: its context (one for all, or one each)")
    p.add_argument("--file", help="sentences: .txt/.tsv/.csv/.jsonl; QA: SQuAD .json or .jsonl of {question, context}")
    p.add_argument("--text-column", help="the sentence column of a .tsv/.csv/.jsonl file (default: the run's)")
    p.add_argument("--out", help="write the JSON lines to this file (atomically) instead of stdout")
    p.add_argument("--jsonl", action="store_true", help="JSON lines on a terminal too (always when piped)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"],
                   help="backbone dtype (default: a run's own; fp32 for an export, as it is stored)")
    p.add_argument("--max-tokens", type=int, help="tokens per backbone batch (default: the run's)")
    p.add_argument("--threshold", type=float, help="QA no-answer threshold (default: the run's, chosen on "
                   "validation; 0.0 for an export, which does not record one)")
    args = p.parse_args(argv)
    if args.max_tokens is not None and args.max_tokens < 1:
        p.error(f"--max-tokens {args.max_tokens}: must be at least 1")
    return args


class LM(nn.Module):
    """What the training code calls `lm` (its `.model` is the backbone), around an exported model's backbone."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.model, self.config = backbone, backbone.config

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype


@dataclass
class Predictor:
    task: str  # "cls" | "qa"
    lm: nn.Module
    tokenizer: object
    head: nn.Linear
    mode: Mode
    args: argparse.Namespace  # the training script's flags, as the run had them
    names: list[str] | None = None  # cls: label names, in the head's order
    threshold: float = 0.0  # qa


# ---- sources -------------------------------------------------------------------------------------------------------

def locate(source: str) -> Path:
    """A local folder as given, else a Hub repo fetched into the Hub cache."""
    folder = Path(source)
    if folder.is_dir():
        return folder
    if folder.exists() or not hub.HUB_ID.fullmatch(source) or "/" not in source:
        raise SourceError(f"{source}: no such folder; {ADVICE}")
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(source, allow_patterns=sorted(set(hub.HEAD_FILES + hub.FULL_FILES))))
    except Exception as e:  # offline, unknown repo, no access: all one line
        raise SourceError(f"{source}: no such folder, and no Hub repo to fetch ({hub.why(e)}); {ADVICE} "
                          "(a local copy works offline)") from None


def kind(folder: Path) -> tuple[str, str]:
    """('run' | 'export', 'cls' | 'qa') from the folder's own metadata."""
    if all((folder / f).is_file() for f in RUN_FILES):
        task = RunDir(folder).read_json("metrics.json").get("task")
        if task not in TASK_OF_RUN:
            raise SourceError(f"{folder}: a run of task {task!r}; predict.py reads runs of train_cls.py (sst2) "
                              "and train_qa.py (squad_v2)")
        return "run", TASK_OF_RUN[task]
    try:
        archs = json.loads((folder / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        archs = []
    task = next((TASK_OF_ARCH[a] for a in archs if a in TASK_OF_ARCH), None)
    if task is None:
        raise SourceError(f"{folder}: neither a run folder ({', '.join(RUN_FILES)}) nor an export of "
                          f"{' or '.join(TASK_OF_ARCH)} (config.json architectures: {archs or 'none'}); {ADVICE}")
    return "export", task


def script_args(task: str, config: dict, opts) -> argparse.Namespace:
    """The training script's flags: its defaults, then what the run recorded, then this command's overrides."""
    script = train_cls if task == "cls" else train_qa
    args = script.parse_args(["--model", str(config.get("model", "x"))])
    for key, value in config.items():
        if hasattr(args, key):
            setattr(args, key, value)
    args.device, args.compile = opts.device, False
    if opts.max_tokens:
        args.max_tokens = opts.max_tokens
    return args


def load_run(folder: Path, task: str, opts) -> Predictor:
    """The run as train_qa.evaluate_run rebuilds it: the base model, prepared by the run's mode, its trained weights."""
    run = RunDir(folder)
    config, info = run.read_json("config.json"), run.read_json("metrics.json")
    args = script_args(task, config, opts)
    if opts.dtype:
        args.dtype = opts.dtype
    mode = flags.mode(args)
    device = model.pick_device(args.device)
    n_labels = len(info.get("labels") or [0, 1])
    make_head = (lambda hidden: model.cls_head(hidden, n_labels)) if task == "cls" else model.qa_head
    lm, tokenizer, head = run.restore(mode, make_head, args.model, device, model.pick_dtype(device, args.dtype))
    names = info.get("label_names") or train_cls.display_names(info.get("labels") or ["0", "1"])
    return Predictor(task, lm, tokenizer, head, mode, args, names=names if task == "cls" else None,
                     threshold=opts.threshold if opts.threshold is not None else info.get("threshold", 0.0))


def load_export(folder: Path, task: str, opts) -> Predictor:
    """An --export checkpoint (or a full pushed repo): its backbone and head, read as the run read its own."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification
    auto = AutoModelForSequenceClassification if task == "cls" else AutoModelForQuestionAnswering
    device = model.pick_device(opts.device)
    with model.loading(str(folder)):
        tokenizer = model.load_tokenizer(str(folder))
        full = auto.from_pretrained(folder, dtype=model.pick_dtype(device, opts.dtype or "fp32"))
    full.requires_grad_(False).eval().to(device)
    head = (full.score if task == "cls" else full.qa_outputs).float()  # the run's head computed in fp32
    args = script_args(task, {"model": str(folder), "pooling": "last"}, opts)
    names = None
    if task == "cls":
        names = train_cls.display_names([str(full.config.id2label.get(i, i)) for i in range(head.out_features)])
    return Predictor(task, LM(full.base_model), tokenizer, head, Mode(), args, names=names,
                     threshold=opts.threshold if opts.threshold is not None else 0.0)


def load(folder: Path, what: str, task: str, opts) -> Predictor:
    with contextlib.redirect_stdout(sys.stderr):  # the loaders' notes; stdout carries predictions
        return (load_run if what == "run" else load_export)(folder, task, opts)


# ---- inputs --------------------------------------------------------------------------------------------------------

def read_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def sentences(opts, default_column: str) -> list[str]:
    if opts.question or opts.context:
        raise SourceError(f"{opts.source} classifies sentences: pass --text or --file, not --question/--context")
    if opts.text:
        return opts.text
    if opts.file:
        path = Path(opts.file)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        if path.suffix not in (".tsv", ".csv", ".jsonl", ".json"):
            return read_lines(path.read_text(encoding="utf-8"))
        rows = _rows(path, default_column, "")
        column = opts.text_column or next((c for c in (default_column, "sentence", "text") if rows and c in rows[0]),
                                          default_column)
        if not rows or any(not isinstance(r.get(column), str) for r in rows):
            raise DataError(f"{path}: every row needs a text column `{column}`; name it with --text-column")
        return [r[column] for r in rows]
    return read_lines(sys.stdin.read())


def qa_row(row, where: str, n: int) -> Example:
    if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row[k].strip()
                                            for k in ("question", "context")):
        raise DataError(f"{where}: line {n} needs a JSON object with text `question` and `context`")
    return Example(str(row.get("id", n)), str(row.get("title", "")), row["question"], row["context"], [], [])


def questions(opts) -> list[Example]:
    if opts.text:
        raise SourceError(f"{opts.source} answers questions: pass --question/--context or --file, not --text")
    if opts.question:
        contexts = opts.context * len(opts.question) if len(opts.context) == 1 else opts.context
        if len(contexts) != len(opts.question):
            raise DataError(f"{len(opts.question)} --question and {len(opts.context)} --context: pass one context "
                            "for all questions, or one each")
        return [qa_row({"question": q, "context": c}, "--question", n) for n, (q, c) in
                enumerate(zip(opts.question, contexts), 1)]
    if opts.file and Path(opts.file).suffix == ".json":
        with contextlib.redirect_stdout(sys.stderr):
            return load_squad(opts.file)
    if opts.file:
        if not Path(opts.file).is_file():
            raise DataError(f"{opts.file}: no such file")
        where, text = opts.file, Path(opts.file).read_text(encoding="utf-8")
    else:
        where, text = "stdin", sys.stdin.read()
    out = []
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                out.append(qa_row(json.loads(line), where, n))
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: line {n} is not JSON ({e.msg})") from None
    return out


# ---- predictions ---------------------------------------------------------------------------------------------------

@torch.no_grad()
def classify(p: Predictor, texts: list[str]) -> list[dict]:
    """The run's test pass (train_cls.Classifier.logits): its tokenisation, pooling, feature source and batches."""
    seqs = train_cls.tokenize(p.tokenizer, texts, p.args.max_length)
    spec = train_cls.sentence_spec("predict", seqs, p.tokenizer.pad_token_id, p.args.pooling)
    with contextlib.redirect_stdout(sys.stderr):
        source = p.mode.source(p.lm, spec, flags.passes(p.args))
        feats = source.all(list(range(len(seqs))), [len(s) for s in seqs], p.args.max_tokens)
    probs = p.head(feats.to(p.head.weight.device)).float().softmax(-1).cpu()
    return [{"text": t, "label": p.names[int(row.argmax())],
             "probabilities": {n: float(x) for n, x in zip(p.names, row)}} for t, row in zip(texts, probs)]


def offsets(context: str, answer: str) -> tuple[int | None, int | None]:
    start = context.find(answer) if answer else -1
    return (start, start + len(answer)) if start >= 0 else (None, None)


@torch.no_grad()
def answer(p: Predictor, examples: list[Example]) -> list[dict]:
    """The run's test pass (train_qa.Reader.test): its windows, feature source, span search and threshold."""
    with contextlib.redirect_stdout(sys.stderr):
        windows, sources = train_qa.sources_for(p.mode, p.lm, p.tokenizer, {"test": examples}, p.args)
        span, diff, _ = train_qa.predict(p.head, sources["test"], examples, windows["test"], p.args.batch_size,
                                         p.args.n_best, p.args.max_answer_length)
    preds, na_prob = predictions(span, diff, p.threshold)
    rows = []
    for ex in examples:
        start, end = offsets(ex.context, preds[ex.id])
        rows.append({"id": ex.id, "question": ex.question, "answer": preds[ex.id], "start": start, "end": end,
                     "no_answer_probability": na_prob[ex.id], "best_span": span[ex.id]})
    return rows


def readable(row: dict) -> str:
    if "label" in row:
        return f"{row['label']} ({row['probabilities'][row['label']]:.3f})  {row['text']}"
    said = f"{row['answer']!r} [{row['start']}:{row['end']}]" if row["answer"] else "(no answer)"
    return f"{said}  no-answer p={row['no_answer_probability']:.3f}  {row['question']}"


def main(argv=None) -> int:
    opts = parse_args(argv)
    folder = locate(opts.source)
    what, task = kind(folder)
    if not (opts.text or opts.question or opts.file) and sys.stdin.isatty():
        raise DataError("nothing to predict: pass --text (sentences), --question/--context (QA) or --file, or pipe "
                        "lines into stdin")
    if task == "cls":
        column = RunDir(folder).read_json("config.json").get("text_column", "sentence") if what == "run" else \
            "sentence"
        inputs = sentences(opts, column)
    else:
        inputs = questions(opts)
    if not inputs:
        raise DataError(f"nothing to predict: {opts.file or 'stdin'} holds no " +
                        ("sentences" if task == "cls" else "questions"))
    p = load(folder, what, task, opts)
    rows = classify(p, inputs) if task == "cls" else answer(p, inputs)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if opts.out:
        write_atomic(opts.out, lines)
        print(f"{len(rows)} predictions in {opts.out}", file=sys.stderr)
    elif opts.jsonl or not sys.stdout.isatty():
        sys.stdout.write(lines)
    else:
        print("\n".join(readable(r) for r in rows))
    return 0


if __name__ == "__main__":
    flags.run(main)
