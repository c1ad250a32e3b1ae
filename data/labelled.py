"""Read labelled text files (TSV, CSV or JSONL) for classification, with errors that say how to fix them."""
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path


class DataError(ValueError):
    """Bad input data; the message names the file and the fix."""


@dataclass
class Labelled:
    texts: list[str]
    labels: list[str]  # raw label values as written in the file
    path: Path


def _rows(path: Path, text_col: str, label_col: str) -> list[dict]:
    try:
        raw = path.read_bytes().decode("utf-8").removeprefix("\ufeff")  # spreadsheet exports start with a BOM
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 (byte {e.start}); re-encode the file as UTF-8") from None
    if path.suffix in (".jsonl", ".json"):
        rows = []
        for n, line in enumerate(raw.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: invalid JSON ({e.msg}); each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected a JSON object per line, got {type(row).__name__}")
            rows.append(row)
        return rows
    # SST-2 TSVs contain stray quote characters: quoting must stay off for TSV.
    quoting = csv.QUOTE_NONE if path.suffix == ".tsv" else csv.QUOTE_MINIMAL
    reader = csv.DictReader(io.StringIO(raw, newline=""),  # split rows on \n and \r only, as csv expects
                            delimiter="\t" if path.suffix == ".tsv" else ",", quoting=quoting)
    rows = list(reader)
    for n, row in enumerate(rows, 2):
        if None in row or None in row.values():
            raise DataError(f"{path}:{n}: expected {len(reader.fieldnames)} columns "
                            f"({', '.join(reader.fieldnames)}); fix the row or the delimiter")
    return rows


def read_labelled(path: str | Path, text_col: str = "sentence", label_col: str = "label") -> Labelled:
    """Texts and raw labels from a .tsv/.csv/.jsonl file; empty texts are refused with their line."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    rows = _rows(path, text_col, label_col)
    if not rows:
        raise DataError(f"{path}: no rows; a header and at least one `{text_col}`/`{label_col}` row are needed")
    missing = [c for c in (text_col, label_col) if c not in rows[0]]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {sorted(rows[0])}. "
                        f"Use --text-column/--label-column to name them")
    texts, labels = [], []
    first_line = 1 if path.suffix in (".jsonl", ".json") else 2
    for n, row in enumerate(rows, first_line):
        text, label = row.get(text_col), row.get(label_col)  # a JSONL row may lack a key
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}: row {n} has an empty or non-text `{text_col}`; remove or fill it")
        if label is None or isinstance(label, (list, dict, float)) or str(label).strip() == "":
            raise DataError(f"{path}: row {n} has an invalid `{label_col}` {label!r}; labels are ints or strings")
        texts.append(text)
        labels.append(str(label).strip())
    return Labelled(texts, labels, path)


def label_names(train: Labelled) -> list[str]:
    """The class names in a stable order: numeric labels sorted as numbers, others as strings."""
    values = set(train.labels)
    numeric = {v for v in values if v.lstrip("-").isdigit()}
    if numeric and numeric != values:
        raise DataError(f"{train.path}: mixed label values {sorted(values)[:6]}; use either numbers or names")
    if len(values) < 2:
        raise DataError(f"{train.path}: only one label value {sorted(values)}; classification needs two or more")
    return sorted(values, key=int) if numeric else sorted(values)


def encode_labels(data: Labelled, names: list[str]) -> list[int]:
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(data.labels) - set(index))
    if unknown:
        raise DataError(f"{data.path}: unknown label value(s) {unknown[:6]}; the training data has {names}")
    return [index[v] for v in data.labels]
