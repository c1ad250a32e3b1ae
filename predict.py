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
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import torch

import flags
import train_cls
import train_qa
from data.labelled import DataError
from data.squad import predictions
from data.squad_json import Example
from files import WriteError, cache_dir, write_atomic
from inputs import questions, sentences
from sources import Predictor, SourceError, kind, load, locate, script_args


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
