"""Use what you trained: predictions from a run folder, an --export folder or a Hub repo this project pushed.

    python predict.py runs/demo-sst2 --text "a gripping, funny film" --text "dull"
    python predict.py runs/NAME --file sentences.txt --out preds.jsonl    # .txt (a sentence a line), .tsv/.csv/.jsonl
    python predict.py runs/squad-NAME --question "Who wrote it?" --context "It was written by ..."
    python predict.py runs/squad-NAME --file dev-v2.0.json --jsonl        # SQuAD JSON, or JSONL of {question, context}
    python predict.py user/repo --text "..."                              # a pushed repo, fetched into the Hub cache
    python predict.py exports/sst2-lora --text "..."                      # an --export (merged, or --peft) folder
    python predict.py runs/demo-qnli --text "Who?" --text-pair "It was Ada."  # a pair run (stdin/.txt: A<TAB>B)
    echo "a gripping, funny film" | python predict.py runs/demo-sst2      # stdin: a sentence (or QA JSON object) a line

The task and everything that shapes the inputs (tokenisation, pooling, windows, the no-answer threshold, the
training mode and its adapters or blocks) come from the source itself. A run folder is rebuilt as train_qa.py's
--eval-run rebuilds it, so its test set gives the run's own test predictions. One JSON object per input: the
label and the probability of every label; or the answer, its character offsets in the context ("" and null when
the no-answer score wins) and the no-answer probability under the threshold. On a terminal: one readable line each.
Inputs given with --text, --question or stdin leave no feature cache behind; a --file's features are cached.
"""
import argparse
import contextlib
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import flags
import hub
import model
import train_cls
import train_qa
from data.labelled import DataError, DuplicateName, _rows, unique_keys
from data.squad import predictions
from data.squad_json import Example, load_squad
from files import WriteError, cache_dir, write_atomic
from lora import PEFT_FILES, PEFT_LAYOUT, from_peft
from modes import Mode
from rundir import RunDir, RunError, rebuild
from safetensors import SafetensorError

TASK_OF_ARCH = {"LlamaForSequenceClassification": "cls", "LlamaForQuestionAnswering": "qa"}
TASK_OF_PEFT = {peft_type: task for task, (_, _, peft_type) in PEFT_LAYOUT.items()}
RUN_FILES = ("config.json", "metrics.json", "head.safetensors")
ADVICE = "pass a run folder (runs/NAME), an --export folder, or the id of a Hub repo this project pushed"
# the training flags predict.py reads from what a source recorded, besides its model (the rest change no prediction)
RECORDED = ("dtype", "max_tokens", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "unfreeze_last")
RECORDED_BY_TASK = {"cls": ("max_length", "pooling", "text_column"),
                    "qa": (*train_qa.WINDOW_FLAGS, "batch_size", "cache_features", "cache_budget_gb")}
DAMAGED = {"run": "the run folder is damaged: train it again (--overwrite)",
           **dict.fromkeys(("export", "peft"), "the export is damaged: export or push it again")}
JSON_TYPES = {str: "string", int: "integer", float: "number"}


class SourceError(model.ModelError):
    """SOURCE is no run, export or pushed repo this script can read (a user error: one line, exit code 2)."""


def parse_args(argv=None) -> argparse.Namespace:
    p = flags.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="run folder, --export folder, or Hub repo id (user/repo)")
    p.add_argument("--text", action="append", default=[], help="a sentence to classify (repeatable)")
    p.add_argument("--text-pair", action="append", default=[], help="the second text of a sentence pair, one per "
                   "--text (runs on two text columns)")
    p.add_argument("--question", action="append", default=[], help="QA: a question (repeatable, with --context)")
    p.add_argument("--context", action="append", default=[], help="QA: its context (one for all, or one each)")
    p.add_argument("--file", help="sentences: .txt/.tsv/.csv/.jsonl; QA: SQuAD .json or .jsonl of {question, context}")
    p.add_argument("--text-column", help="the text column(s) of a .tsv/.csv/.jsonl file, comma-separated for "
                   "pairs (default: the run's)")
    p.add_argument("--out", help="write the JSON lines to this file (atomically) instead of stdout")
    p.add_argument("--overwrite", action="store_true", help="let --out replace an existing file")
    p.add_argument("--jsonl", action="store_true", help="JSON lines on a terminal too (always when piped)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"],
                   help="backbone dtype (default: the run's own, as an export records it; fp32 for an export "
                   "that records none)")
    p.add_argument("--max-tokens", type=int, help="tokens per backbone batch (default: the run's)")
    p.add_argument("--threshold", type=float, help="QA no-answer threshold (default: the run's, chosen on "
                   "validation, as its export records it too)")
    args = p.parse_args(argv)
    flags.check_device(p, args.device)
    if args.max_tokens is not None and args.max_tokens < 1:
        p.error(f"--max-tokens {args.max_tokens}: must be at least 1")
    if args.threshold is not None and not math.isfinite(args.threshold):
        p.error(f"--threshold {args.threshold}: must be a finite number")
    for flag in ("text", "text_pair", "question", "context"):
        if blank := [t for t in getattr(args, flag) if not t.strip()]:
            p.error(f"--{flag.replace('_', '-')} {blank[0]!r}: empty; pass the text itself")
    if args.file and Path(args.file).is_dir():
        p.error(f"--file {args.file}: is a folder; pass a file of inputs (a run or export folder is the SOURCE)")
    if args.file and not Path(args.file).is_file():
        p.error(f"--file {args.file}: no such file")
    if args.overwrite and args.out is None:
        p.error("--overwrite lets --out replace a file; it would do nothing without --out")
    if args.out is not None:
        check_out(p, args.out, args.overwrite)
        for given, what in ((args.file, "--file"), (args.source, "the SOURCE")):
            if given and Path(given).exists() and writes_into(args.out, Path(given)):
                p.error(f"--out {args.out}: is {what} {given} or inside it (through a link, maybe); write the "
                        "predictions elsewhere")
    return args


def writes_into(out: str, given: Path) -> bool:
    """Whether writing `out` (through links, as write_atomic does) changes the file `given`, or a file in the folder
    `given`."""
    target = Path(os.path.realpath(out))
    if given.is_dir():
        return Path(os.path.realpath(given)) in target.parents
    return target == Path(os.path.realpath(given)) or (target.exists() and os.path.samefile(target, given))


def check_out(p: argparse.ArgumentParser, out: str, overwrite: bool) -> None:
    """Before any work: --out must be a file this process can write (atomically: a temp file beside it), and an
    existing file only with --overwrite."""
    path = Path(out)
    if path.is_dir():
        p.error(f"--out {out}: is a folder; pass a file path in it, e.g. {path / 'preds.jsonl'}")
    if path.is_file() and not overwrite:
        p.error(f"--out {out}: exists; pass --overwrite to replace it, or another path")
    if path.exists() and not path.is_file():
        return  # a device or FIFO (/dev/stdout): written in place
    folder = next(f for f in path.absolute().parents if f.exists())  # write_atomic makes the missing ones
    if not folder.is_dir():
        p.error(f"--out {out}: {folder} is a file, not a folder; pass a path in a folder")
    try:
        tempfile.TemporaryFile(dir=folder).close()  # a real write: os.access says yes to root, even in /proc
    except OSError as e:
        p.error(f"--out {out}: cannot write in {folder} ({e.strerror}); pass a path in a folder you can write")


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
    threshold: float | None = 0.0  # qa (None: SQuAD v1, every question answered)


# ---- sources -------------------------------------------------------------------------------------------------------

def locate(source: str) -> Path:
    """A local folder as given, else a Hub repo fetched into the Hub cache."""
    folder = Path(source)
    if folder.is_dir():
        return folder
    if folder.exists():
        raise SourceError(f"{source}: is a file, not a folder; {ADVICE} (a file of inputs goes in --file)")
    if not hub.HUB_ID.fullmatch(source) or "/" not in source:
        raise SourceError(f"{source}: no such folder; {ADVICE}")
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(source, allow_patterns=sorted(set(hub.HEAD_FILES + hub.FULL_FILES))))
    except Exception as e:  # offline, unknown repo, no access: all one line
        raise SourceError(f"{source}: no such folder, and no Hub repo to fetch ({hub.why(e)}); {ADVICE} "
                          "(a local copy works offline)") from None


def kind(folder: Path) -> tuple[str, str]:
    """('run' | 'export' | 'peft', 'cls' | 'qa') from the folder's own metadata."""
    if all((folder / f).is_file() for f in RUN_FILES):
        info = RunDir(folder).read_json("metrics.json")
        if info.get("task") == "squad_v2":
            return "run", "qa"
        if info.get("labels"):  # train_cls.py records its labels, whatever the task
            return "run", "cls"
        raise SourceError(f"{folder}: a run of task {info.get('task')!r}; predict.py reads runs of train_cls.py "
                          "(classification) and train_qa.py (squad_v2)")
    if (folder / PEFT_FILES[0]).is_file() and (folder / model.SETTINGS_FILE).is_file():
        peft_type = read_json(folder / PEFT_FILES[0]).get("task_type")
        if peft_type not in TASK_OF_PEFT:
            raise SourceError(f"{folder}: a PEFT adapter of task type {peft_type!r}; this project writes "
                              f"{' or '.join(TASK_OF_PEFT)}")
        return "peft", TASK_OF_PEFT[peft_type]
    archs = (read_json(folder / "config.json").get("architectures") or []) if (folder / "config.json").is_file() \
        else []
    task = next((TASK_OF_ARCH[a] for a in archs if a in TASK_OF_ARCH), None)
    if task is None:
        raise SourceError(f"{folder}: neither a run folder ({', '.join(RUN_FILES)}), nor an export of "
                          f"{' or '.join(TASK_OF_ARCH)} (config.json architectures: {archs or 'none'}), nor a PEFT "
                          f"export ({PEFT_FILES[0]} and {model.SETTINGS_FILE}); {ADVICE}")
    return "export", task


def read_json(path: Path) -> dict:
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SourceError(f"{path} does not read as JSON ({type(e).__name__}); export or push it again") from None
    if not isinstance(out, dict):
        raise SourceError(f"{path}: expected a JSON object; export or push it again")
    return out


def settings(folder: Path) -> dict:
    """What an export recorded of its run besides the weights (model.SETTINGS_FILE); older exports have none."""
    path = folder / model.SETTINGS_FILE
    return read_json(path) if path.is_file() else {}


def make_head(task: str, n_labels: int):
    return (lambda hidden: model.cls_head(hidden, n_labels)) if task == "cls" else model.qa_head


def recorded(folder: Path, what: str) -> tuple[dict, Path]:
    """The training flags a source recorded, and where (named when they are damaged)."""
    if what == "run":
        return RunDir(folder).read_json("config.json"), folder / "config.json"
    if what == "export":  # the export's own weights; fp32 where an older export records no dtype
        return {"dtype": "fp32", **settings(folder), "model": str(folder)}, folder / model.SETTINGS_FILE
    config = read_json(folder / PEFT_FILES[0])
    try:
        lora_flags = {"lora_rank": int(config["r"]), "lora_alpha": float(config["lora_alpha"]),
                      "lora_targets": ",".join(config["target_modules"])}
    except (KeyError, TypeError, ValueError) as e:
        raise SourceError(f"{folder / PEFT_FILES[0]}: not a PEFT export of this project ({e}); export it "
                          "again") from None
    return {**settings(folder), **lora_flags}, folder


def script_args(task: str, what: str, folder: Path, opts) -> argparse.Namespace:
    """The training script's flags as the source recorded them, put through the script's own parse_args (types,
    choices, ranges, how flags combine), so a damaged or hand-edited file is one line before anything loads; then
    this command's overrides."""
    script = train_cls if task == "cls" else train_qa
    values, where = recorded(folder, what)
    defaults = vars(script.parse_args([]))
    # defaults are left out: given, one that acts only with another flag would be refused (flags.IDLE_FLAGS)
    given = {k: v for k in RECORDED + RECORDED_BY_TASK[task] if (v := values.get(k)) is not None and v != defaults[k]}
    given["model"] = values.get("model")  # none is damage, not the default model
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            args = script.parse_args([f"--{k.replace('_', '-')}={v}" for k, v in given.items()])
    except SystemExit:
        why = said.getvalue().strip().removeprefix("error: ").removesuffix(" (see --help)")
        raise SourceError(f"{where}: a recorded flag {script.__name__}.py refuses ({why}); {DAMAGED[what]}") from None
    for key, value in given.items():
        if getattr(args, key) != value:  # "256" for 256, 5 for "5": not what the script writes
            raise SourceError(f"{where}: {key} {value!r}: expected a JSON {JSON_TYPES[type(getattr(args, key))]}; "
                              f"{DAMAGED[what]}")
    args.device, args.compile = opts.device, "auto"
    args.max_tokens = opts.max_tokens or args.max_tokens
    args.dtype = opts.dtype or args.dtype
    return args


def threshold(opts, info: dict, where: Path, what: str) -> float | None:
    """QA: --threshold, else the one the run chose on validation (recorded in its metrics.json or export); None
    (null there): the run trained on SQuAD v1 data, and answers every question."""
    if opts.threshold is not None:
        return opts.threshold
    value = info.get("threshold", 0.0)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SourceError(f"{where}: threshold {value!r}: expected a finite number; {DAMAGED[what]}")
    return value


def load_run(folder: Path, task: str, opts, args: argparse.Namespace) -> Predictor:
    """The run as train_qa.evaluate_run rebuilds it: the base model, prepared by the run's mode, its trained weights."""
    run = RunDir(folder)
    info = run.read_json("metrics.json")
    cut = threshold(opts, info, run.file("metrics.json"), "run")
    mode = flags.mode(args)
    device = model.pick_device(args.device)
    lm, tokenizer, head = run.restore(mode, make_head(task, len(info.get("labels") or [0, 1])), args.model, device,
                                      model.pick_dtype(device, args.dtype), task)
    names = info.get("label_names") or info.get("labels")  # as the run recorded them (older runs: the values)
    return Predictor(task, lm, tokenizer, head, mode, args, names=names if task == "cls" else None, threshold=cut)


def load_export(folder: Path, task: str, opts, args: argparse.Namespace) -> Predictor:
    """An --export checkpoint (or a full pushed repo): its backbone and head, read as the run read its own."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification
    auto = AutoModelForSequenceClassification if task == "cls" else AutoModelForQuestionAnswering
    device = model.pick_device(args.device)
    cut = threshold(opts, settings(folder), folder / model.SETTINGS_FILE, "export")
    try:  # not model.loading: its message names a --model flag, and predict.py was given the source
        tokenizer = model.load_tokenizer(str(folder))
        # the run's compute dtype (bf16 on GPUs and AMX CPUs), as the export records it
        full = auto.from_pretrained(folder, dtype=model.pick_dtype(device, args.dtype))
    except (OSError, ValueError, SafetensorError) as e:
        raise SourceError(f"{opts.source}: cannot load it ({hub.why(e)}); {DAMAGED['export']}") from None
    full.requires_grad_(False).eval().to(device)
    head = (full.score if task == "cls" else full.qa_outputs).float()  # the run's head computed in fp32
    names = None
    if task == "cls":
        names = [str(full.config.id2label.get(i, i)) for i in range(head.out_features)]  # as pipeline shows them
    return Predictor(task, LM(full.base_model), tokenizer, head, Mode(), args, names=names, threshold=cut)


def load_peft(folder: Path, task: str, opts, args: argparse.Namespace) -> Predictor:
    """An --export --peft folder: the base model with the run's LoRA adapters and head, read from PEFT's files."""
    recorded = settings(folder)
    cut = threshold(opts, recorded, folder / model.SETTINGS_FILE, "peft")
    try:
        trained = from_peft(RunDir(folder).load_weights(PEFT_FILES[1]), task)
    except (KeyError, TypeError, ValueError, RunError) as e:
        raise SourceError(f"{folder}: not a PEFT export of this project ({e}); export it again") from None
    head_state = {k.removeprefix("head."): t for k, t in trained.items() if k.startswith("head.")}
    n_labels = len(head_state.get("weight", [0, 0]))
    mode, device = flags.mode(args), model.pick_device(args.device)
    lm, tokenizer, head = rebuild(mode, make_head(task, n_labels), args.model, device,
                                  model.pick_dtype(device, args.dtype), head_state, trained,
                                  folder / PEFT_FILES[1], folder / PEFT_FILES[1])
    names = recorded.get("label_names") or [str(i) for i in range(n_labels)]
    return Predictor(task, lm, tokenizer, head, mode, args, names=names if task == "cls" else None, threshold=cut)


def load(folder: Path, what: str, task: str, opts, args: argparse.Namespace) -> Predictor:
    with contextlib.redirect_stdout(sys.stderr):  # the loaders' notes; stdout carries predictions
        return {"run": load_run, "export": load_export, "peft": load_peft}[what](folder, task, opts, args)


# ---- inputs --------------------------------------------------------------------------------------------------------

def read_lines(opts, parse: Callable[[str, int, str], object]) -> list:
    """parse(where, n, line) of each non-blank line of --file or stdin, numbered as an editor numbers them. Once all
    parse, the blank lines skipped are counted on stderr: output line N is then not input line N."""
    where = opts.file or "stdin"
    try:
        raw = Path(opts.file).read_bytes() if opts.file else sys.stdin.buffer.read()
    except (OSError, AttributeError, ValueError) as e:  # stdin closed (None, or a closed file), unreadable
        why = getattr(e, "strerror", None) or "closed"
        raise DataError(f"{where}: cannot read it ({why}); pass --text, --question/--context or --file") from None
    try:
        lines = raw.decode("utf-8").removeprefix("\ufeff").split("\n")  # a BOM: as data.labelled reads files
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 (byte {e.start}); re-encode it as UTF-8") from None
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no line
    out = [parse(where, n, line.removesuffix("\r")) for n, line in enumerate(lines, 1) if line.strip()]
    if skipped := len(lines) - len(out):
        print(f"{where}: skipped {skipped} blank line(s)", file=sys.stderr)
    return out


def sentences(opts, columns: list[str]) -> list:
    """The texts to classify: strings, or (first, second) pairs for a run trained on two text columns."""
    pairs = len(columns) == 2
    if opts.question or opts.context:
        raise SourceError(f"{opts.source} classifies sentences: pass --text or --file, not --question/--context")
    if opts.text or opts.text_pair:
        if not pairs and opts.text_pair:
            raise DataError(f"{opts.source} classifies single sentences: pass --text without --text-pair")
        if pairs and len(opts.text_pair) != len(opts.text):
            raise DataError(f"{opts.source} classifies sentence pairs ({', '.join(columns)}): pass --text FIRST "
                            f"--text-pair SECOND for each pair ({len(opts.text)} --text, {len(opts.text_pair)} "
                            "--text-pair)")
        return list(zip(opts.text, opts.text_pair)) if pairs else opts.text
    if opts.file and Path(opts.file).suffix in (".tsv", ".csv", ".jsonl", ".json"):
        path = Path(opts.file)
        rows = _rows(path, None)
        fallbacks = [columns, ["text", "text_pair"]] if pairs else [columns, ["sentence"], ["text"]]
        names = train_cls.text_columns(opts.text_column) if opts.text_column else \
            next((c for c in fallbacks if rows and all(k in rows[0] for k in c)), columns)
        if len(names) != len(columns):
            raise DataError(f"--text-column {opts.text_column}: {opts.source} reads {len(columns)} text column(s)")
        for n, row in enumerate(rows, 1):
            if not all(isinstance(row.get(k), str) and row[k].strip() for k in names):
                raise DataError(f"{path}: row {n} needs text in column(s) {', '.join(names)}; name them with "
                                "--text-column")
        return [tuple(r[k] for k in names) if pairs else r[names[0]] for r in rows]
    def pair(where: str, n: int, line: str) -> tuple[str, str]:
        halves = tuple(line.split("\t"))
        if len(halves) != 2 or not all(x.strip() for x in halves):
            raise DataError(f"{where}: line {n} needs two tab-separated texts (a sentence pair: {', '.join(columns)})")
        return halves
    return read_lines(opts, pair if pairs else lambda where, n, line: line)


def qa_row(row, where: str, n: int) -> Example:
    if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("question", "context")):
        raise DataError(f"{where}: line {n} needs a JSON object with text `question` and `context`")
    if empty := [k for k in ("question", "context") if not row[k].strip()]:
        raise DataError(f"{where}: line {n}: its `{empty[0]}` is empty")
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
            return load_squad(opts.file, test=True)
    return read_lines(opts, qa_line)


def qa_line(where: str, n: int, line: str) -> Example:
    try:
        row = json.loads(line, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: line {n} is not JSON ({e.msg})") from None
    except DuplicateName as e:
        raise DataError(f"{where}: line {n} names the key {str(e)!r} twice; rename or drop one") from None
    return qa_row(row, where, n)


# ---- predictions ---------------------------------------------------------------------------------------------------

@torch.no_grad()
def classify(p: Predictor, texts: list, keep: bool) -> list[dict]:
    """The run's test pass (train_cls.Classifier.logits): its tokenisation, pooling, feature source and batches;
    the frozen features kept in the disk cache if `keep`."""
    with contextlib.redirect_stdout(sys.stderr):  # its notes (texts cut to max_length); stdout carries predictions
        seqs = train_cls.tokenize(p.tokenizer, texts, p.args.max_length, "input")
        spec = train_cls.sentence_spec("predict", seqs, p.tokenizer.pad_token_id, p.args.pooling)
        source = p.mode.source(p.lm, spec, flags.passes(p.args, keep))
        feats = source.all(list(range(len(seqs))), [len(s) for s in seqs], p.args.max_tokens)
    probs = p.head(feats.to(p.head.weight.device)).float().softmax(-1).cpu()
    return [{**({"text": t[0], "text_pair": t[1]} if isinstance(t, tuple) else {"text": t}),
             "label": p.names[int(row.argmax())], "probabilities": {n: float(x) for n, x in zip(p.names, row)}}
            for t, row in zip(texts, probs)]


@torch.no_grad()
def answer(p: Predictor, examples: list[Example], keep: bool) -> list[dict]:
    """The run's test pass (train_qa.Reader.test): its windows, feature source, span search and threshold; the
    answer's character offsets are the chosen span's."""
    with contextlib.redirect_stdout(sys.stderr):
        windows, sources = train_qa.sources_for(p.mode, p.lm, p.tokenizer, {"test": examples}, p.args, keep)
        span, diff, _, first = train_qa.predict(p.head, sources["test"], examples, windows["test"],
                                                p.args.batch_size, p.args.n_best, p.args.max_answer_length)
    preds, na_prob = predictions(span, diff, p.threshold)
    rows = []
    for ex in examples:
        text = preds[ex.id]
        start, end = (first[ex.id], first[ex.id] + len(text)) if text else (None, None)
        rows.append({"id": ex.id, "question": ex.question, "answer": text, "start": start, "end": end,
                     "no_answer_probability": na_prob[ex.id], "best_span": span[ex.id]})
    return rows


def readable(row: dict) -> str:
    if "label" in row:
        pair = f" | {row['text_pair']}" if "text_pair" in row else ""
        return f"{row['label']} ({row['probabilities'][row['label']]:.3f})  {row['text']}{pair}"
    said = f"{row['answer']!r} [{row['start']}:{row['end']}]" if row["answer"] else "(no answer)"
    return f"{said}  no-answer p={row['no_answer_probability']:.3f}  {row['question']}"


def main(argv=None) -> int:
    opts = parse_args(argv)
    cache_dir()  # LLAMA_HEADS_CACHE that is no folder: one line before any work
    folder = locate(opts.source)
    what, task = kind(folder)
    if task == "cls" and opts.threshold is not None:
        raise SourceError(f"--threshold: {opts.source} classifies sentences, and --threshold is the no-answer "
                          "threshold of QA: drop it")
    args = script_args(task, what, folder, opts)
    if not (opts.text or opts.text_pair or opts.question or opts.file) and sys.stdin is not None and \
            sys.stdin.isatty():
        raise DataError("nothing to predict: pass --text (sentences), --question/--context (QA) or --file, or pipe "
                        "lines into stdin")
    inputs = sentences(opts, train_cls.text_columns(args.text_column)) if task == "cls" else questions(opts)
    if not inputs:
        raise DataError(f"nothing to predict: {opts.file or 'stdin'} holds no " +
                        ("sentences" if task == "cls" else "questions"))
    p = load(folder, what, task, opts, args)
    keep = opts.file is not None  # a file may be read again; one-off --text/stdin inputs leave nothing on disk
    rows = (classify if task == "cls" else answer)(p, inputs, keep)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if opts.out:
        try:
            write_atomic(opts.out, lines)
        except WriteError as e:  # computed already: not thrown away
            sys.stdout.write(lines)
            print(f"error: {e}; the {len(rows)} predictions went to stdout instead", file=sys.stderr)
            return 2
        print(f"{len(rows)} predictions in {opts.out}", file=sys.stderr)
    elif opts.jsonl or not sys.stdout.isatty():
        sys.stdout.write(lines)
    else:
        print("\n".join(readable(r) for r in rows))
    return 0


if __name__ == "__main__":
    flags.run(main)
