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
    texts: list  # str, or (first, second) for sentence pairs
    labels: list[str]  # raw label values as written in the file
    path: Path


def unique_keys(pairs: list[tuple]) -> dict:
    """json.loads' object_pairs_hook: an object naming a key twice is ambiguous (json keeps the last silently)."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise DuplicateName(key)
        seen.add(key)
    return dict(pairs)


class DuplicateName(ValueError):
    """A column (a JSON key) named twice in one header (object)."""


def _rows(path: Path, fieldnames: list[str] | None) -> list[dict]:
    try:
        raw = path.read_bytes().decode("utf-8").removeprefix("\ufeff")  # spreadsheet exports start with a BOM
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 (byte {e.start}); re-encode the file as UTF-8") from None
    except (IsADirectoryError, PermissionError) as e:  # a missing file is named earlier, with the flag to pass
        raise DataError(f"{path}: cannot read it ({e.strerror}); pass a .tsv, .csv or .jsonl file") from None
    if path.suffix in (".jsonl", ".json"):
        rows = []
        for n, line in enumerate(raw.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
            if not line.strip():
                continue
            try:
                row = json.loads(line, object_pairs_hook=unique_keys)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: invalid JSON ({e.msg}); each line must be one JSON object") from None
            except DuplicateName as e:
                raise DataError(f"{path}:{n}: names the key {str(e)!r} twice; which one is meant is ambiguous: "
                                "rename or drop one") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected a JSON object per line, got {type(row).__name__}")
            rows.append(row)
        return rows
    # SST-2 TSVs contain stray quote characters: quoting must stay off for TSV.
    quoting = csv.QUOTE_NONE if path.suffix == ".tsv" else csv.QUOTE_MINIMAL
    reader = csv.DictReader(io.StringIO(raw, newline=""),  # split rows on \n and \r only, as csv expects
                            fieldnames, delimiter="\t" if path.suffix == ".tsv" else ",", quoting=quoting)
    names = reader.fieldnames or []
    if twice := next((c for i, c in enumerate(names) if c in names[:i]), None):
        raise DataError(f"{path}: the header names the column {twice!r} twice; which one is meant is ambiguous: "
                        "rename or drop one")
    rows = list(reader)
    for n, row in enumerate(rows, 1 if fieldnames else 2):
        if None in row or None in row.values():
            raise DataError(f"{path}:{n}: expected {len(reader.fieldnames)} columns "
                            f"({', '.join(reader.fieldnames)}); fix the row or the delimiter")
    return rows


def read_labelled(path: str | Path, text_col: str | tuple[str, ...] = "sentence", label_col: str = "label",
                  fieldnames: list[str] | None = None) -> Labelled:
    """Texts and raw labels from a .tsv/.csv/.jsonl file; empty texts are refused with their line. Two text
    columns read sentence pairs: (first, second) tuples. `fieldnames` names the columns of a file without a
    header (GLUE's CoLA)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    cols = (text_col,) if isinstance(text_col, str) else tuple(text_col)
    rows = _rows(path, fieldnames)
    if not rows:
        raise DataError(f"{path}: no rows; a header and at least one `{'`/`'.join(cols)}`/`{label_col}` row "
                        "are needed")
    missing = [c for c in (*cols, label_col) if c not in rows[0]]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {sorted(rows[0])}. "
                        f"Use --text-column/--label-column to name them (--text-column a,b: sentence pairs)")
    texts, labels = [], []
    first_line = 1 if path.suffix in (".jsonl", ".json") or fieldnames else 2
    for n, row in enumerate(rows, first_line):
        for col in cols:
            text = row.get(col)  # a JSONL row may lack a key
            if not isinstance(text, str) or not text.strip():
                half = f" (half of the pair {'/'.join(cols)})" if len(cols) > 1 else ""
                raise DataError(f"{path}: row {n} has an empty or non-text `{col}`{half}; remove or fill it")
        label = row.get(label_col)
        if label is None or isinstance(label, (list, dict, float)) or str(label).strip() == "":
            raise DataError(f"{path}: row {n} has an invalid `{label_col}` {label!r}; labels are ints or strings")
        texts.append(row[cols[0]] if len(cols) == 1 else tuple(row[c] for c in cols))
        labels.append(str(label).strip())
    return Labelled(texts, labels, path)


def label_names(train: Labelled) -> list[str]:
    """The class names in a stable order (sorted_labels)."""
    values = set(train.labels)
    numeric = {v for v in values if v.lstrip("-").isdigit()}
    if numeric and numeric != values:
        raise DataError(f"{train.path}: mixed label values {sorted(values)[:6]}; use either numbers or names")
    if len(values) < 2:
        raise DataError(f"{train.path}: only one label value {sorted(values)}; classification needs two or more")
    return sorted_labels(values)


def sorted_labels(values) -> list[str]:
    """Numeric labels sorted as numbers, others as strings."""
    return sorted(values, key=int) if all(v.lstrip("-").isdigit() for v in values) else sorted(values)


def encode_labels(data: Labelled, names: list[str]) -> list[int]:
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(data.labels) - set(index))
    if unknown:
        known = f"{names}" if len(names) <= 12 else f"{len(names)}: {names[:12]}..."  # a text column read as labels
        raise DataError(f"{data.path}: unknown label value(s) {unknown[:6]}; the training data has {known}")
    return [index[v] for v in data.labels]
