"""The inputs predict.py reads: --text (and --text-pair), --question/--context, a --file (.txt, .tsv/.csv/.jsonl,
SQuAD .json, JSONL of {question, context}) or stdin, each error one line naming the input and the fix.
"""
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import train_cls
from data.labelled import DataError, DuplicateName, _rows, unique_keys
from data.squad_json import Example, load_squad
from sources import SourceError


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
