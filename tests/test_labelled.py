"""data/labelled.py and data/split.py: reading TSV/CSV/JSONL, one-line errors that name the file and the fix,
and the stratified train/validation split."""
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from data.labelled import DataError, encode_labels, label_names, read_labelled
from data.split import stratified_sample, stratified_split

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "samples" / "sst2"


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def error(fn, path, *fix):
    """The DataError message of fn(path): it names the file and says what to do."""
    with pytest.raises(DataError) as e:
        fn(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    for words in fix:
        assert words in msg, msg
    return msg


# --- reading -----------------------------------------------------------------------------------------------

def test_bundled_sample():
    train, dev = read_labelled(SAMPLE / "train.tsv"), read_labelled(SAMPLE / "dev.tsv")
    assert (len(train.texts), len(dev.texts)) == (2000, 872)
    assert label_names(train) == ["0", "1"] and set(dev.labels) == {"0", "1"}


def test_tsv_keeps_quotes_verbatim(tmp_path):
    """SST-2 has stray quotes ('" the ...', "it 's"): TSV is read with QUOTE_NONE."""
    rows = ['" quoted start with no end\t1', "it 's \"fine\" , really\t0", '"""\t1']
    data = read_labelled(write(tmp_path, "q.tsv", "sentence\tlabel\n" + "\n".join(rows) + "\n"))
    assert data.texts == [r.split("\t")[0] for r in rows] and data.labels == ["1", "0", "1"]


def test_csv_quoting_and_multiline_fields(tmp_path):
    data = read_labelled(write(tmp_path, "d.csv", 'label,sentence\n1,"good, not great"\n0,"a ""bad""\nfilm"\n'))
    assert data.texts == ["good, not great", 'a "bad"\nfilm'] and data.labels == ["1", "0"]


def test_jsonl(tmp_path):
    lines = ['{"sentence": "fine", "label": 1}', "", '{"sentence": "meh", "label": "0", "id": 7}']
    data = read_labelled(write(tmp_path, "d.jsonl", "\r\n".join(lines) + "\n"))
    assert data.texts == ["fine", "meh"] and data.labels == ["1", "0"]


@pytest.mark.parametrize("name, content", [
    ("u.tsv", "sentence\tlabel\nline\u2028separator\t1\nnext\x85line\t0\n"),
    ("u.jsonl", '{"sentence": "line\u2028separator", "label": 1}\n{"sentence": "next\x85line", "label": 0}\n'),
])
def test_unicode_line_separators_stay_inside_a_sentence(tmp_path, name, content):
    assert read_labelled(write(tmp_path, name, content)).texts == ["line\u2028separator", "next\x85line"]


def test_byte_order_mark_and_crlf(tmp_path):
    data = read_labelled(write(tmp_path, "excel.csv", "\ufeffsentence,label\r\nfine,1\r\n"))
    assert data.texts == ["fine"] and data.labels == ["1"]


def test_other_columns_are_ignored_and_columns_can_be_named(tmp_path):
    path = write(tmp_path, "d.tsv", "idx\ttext\tstars\n0\tgreat\tpos\n1\tawful\tneg\n")
    data = read_labelled(path, text_col="text", label_col="stars")
    assert data.texts == ["great", "awful"] and data.labels == ["pos", "neg"]


def test_sentence_pairs_from_every_format(tmp_path):
    """Two text columns read (first, second) tuples; other columns are ignored."""
    pair = ("premise", "hypothesis")
    for name, content in (("p.tsv", "id\tpremise\thypothesis\tlabel\n0\tA man sleeps.\tHe rests.\tyes\n"),
                          ("p.csv", 'label,hypothesis,premise\nyes,He rests.,"A man sleeps."\n'),
                          ("p.jsonl", '{"premise": "A man sleeps.", "hypothesis": "He rests.", "label": "yes"}\n')):
        data = read_labelled(write(tmp_path, name, content), pair)
        assert data.texts == [("A man sleeps.", "He rests.")] and data.labels == ["yes"]


def test_file_without_header(tmp_path):
    """GLUE's CoLA files have no header: fieldnames names their columns, and rows count from line 1."""
    path = write(tmp_path, "cola.tsv", "gj04\t1\t\tThe book was read.\ngj04\t0\t*\tRead book the was.\n")
    data = read_labelled(path, "sentence", "label", fieldnames=["source", "label", "original", "sentence"])
    assert data.texts == ["The book was read.", "Read book the was."] and data.labels == ["1", "0"]
    bad = write(tmp_path, "bad.tsv", "gj04\t1\t\tfine\ngj04\t0\n")
    error(lambda p: read_labelled(p, fieldnames=["source", "label", "original", "sentence"]), bad,
          f"{bad}:2:", "expected 4 columns")


# --- errors: each names the file and the fix ---------------------------------------------------------------

def test_no_such_file(tmp_path):
    error(read_labelled, tmp_path / "missing.tsv", "no such file")


def test_a_folder_is_no_file(tmp_path):
    error(read_labelled, tmp_path, str(tmp_path), "cannot read it (Is a directory)")


def test_missing_column(tmp_path):
    msg = error(read_labelled, write(tmp_path, "d.tsv", "text\tlabel\nfine\t1\n"), "--text-column/--label-column")
    assert "['sentence']" in msg and "'text'" in msg


@pytest.mark.parametrize("name, content, where", [
    ("d.csv", "sentence,sentence,label\na,b,1\n", "the header names the column 'sentence' twice"),
    ("d.tsv", "label\tsentence\tlabel\n1\ta\t0\n", "the header names the column 'label' twice"),
    ("d.jsonl", '{"sentence": "a", "label": 1}\n{"sentence": "a", "sentence": "b", "label": 1}\n',
     ":2: names the key 'sentence' twice"),
])
def test_a_column_named_twice_is_refused(tmp_path, name, content, where):
    """csv and json keep the last of two same-named columns silently: which one a user meant is unknown."""
    error(read_labelled, write(tmp_path, name, content), where, "ambiguous: rename or drop one")


@pytest.mark.parametrize("row", ["fine\t1\textra", "no label column"])
def test_row_with_wrong_field_count(tmp_path, row):
    path = write(tmp_path, "d.tsv", f"sentence\tlabel\nok\t0\n{row}\n")
    error(read_labelled, path, f"{path}:3:", "expected 2 columns", "fix the row or the delimiter")


def test_unknown_label_in_eval_set(tmp_path):
    train = read_labelled(write(tmp_path, "train.tsv", "sentence\tlabel\na\t0\nb\t1\n"))
    dev = read_labelled(write(tmp_path, "dev.tsv", "sentence\tlabel\nc\t1\nd\t2\n"))
    msg = error(lambda _: encode_labels(dev, label_names(train)), dev.path, "['2']", "the training data has ['0', '1']")
    assert str(train.path) not in msg


def test_many_known_labels_are_listed_short(tmp_path):
    """A text column read as labels (--label-column premise) has a value per row: the error lists a dozen."""
    train = read_labelled(write(tmp_path, "train.tsv", "sentence\tlabel\n" + "".join(f"a\tv{i}\n" for i in range(60))))
    dev = read_labelled(write(tmp_path, "dev.tsv", "sentence\tlabel\nc\tother\n"))
    msg = error(lambda _: encode_labels(dev, label_names(train)), dev.path, "the training data has 60: ['v0', 'v1'")
    assert "v59" not in msg and len(msg) < 300


def test_mixed_label_values(tmp_path):
    data = read_labelled(write(tmp_path, "d.tsv", "sentence\tlabel\na\t0\nb\tpositive\n"))
    error(lambda _: label_names(data), data.path, "mixed label values", "use either numbers or names")


def test_single_label(tmp_path):
    data = read_labelled(write(tmp_path, "d.tsv", "sentence\tlabel\na\t1\nb\t1\n"))
    error(lambda _: label_names(data), data.path, "only one label value ['1']", "two or more")


def test_label_order_numeric_then_names(tmp_path):
    numeric = read_labelled(write(tmp_path, "n.tsv", "sentence\tlabel\na\t10\nb\t2\nc\t-1\n"))
    names = read_labelled(write(tmp_path, "s.tsv", "sentence\tlabel\na\tpos\nb\tneg\nc\tneutral\n"))
    assert label_names(numeric) == ["-1", "2", "10"] and label_names(names) == ["neg", "neutral", "pos"]
    assert encode_labels(numeric, label_names(numeric)) == [2, 1, 0]


@pytest.mark.parametrize("content", ["", "sentence\tlabel\n"])
def test_empty_file_and_header_only(tmp_path, content):
    error(read_labelled, write(tmp_path, "d.tsv", content), "no rows", "a header and at least one")


@pytest.mark.parametrize("name, content, row", [
    ("d.tsv", "sentence\tlabel\nfine\t1\n  \t0\n", 3),
    ("d.jsonl", '{"sentence": "fine", "label": 1}\n{"sentence": "", "label": 0}\n', 2),
    ("d.jsonl", '{"sentence": "fine", "label": 1}\n{"label": 0}\n', 2),
])
def test_empty_sentence(tmp_path, name, content, row):
    error(read_labelled, write(tmp_path, name, content), f"row {row} ", "`sentence`", "remove or fill it")


@pytest.mark.parametrize("name, content, words", [
    ("d.tsv", "a\tb\tlabel\nx\ty\t1\nx\t\t0\n", ["row 3 ", "`b` (half of the pair a/b)"]),
    ("d.jsonl", '{"a": "x", "b": "y", "label": 1}\n{"a": "x", "label": 0}\n', ["row 2 ", "`b` (half of the pair a/b)"]),
    ("d.tsv", "a\tlabel\nx\t1\n", ["missing column(s) ['b']", "--text-column a,b: sentence pairs"]),
], ids=["empty-half", "missing-half", "missing-second-column"])
def test_bad_pairs(tmp_path, name, content, words):
    error(lambda p: read_labelled(p, ("a", "b")), write(tmp_path, name, content), *words)


@pytest.mark.parametrize("line", ['{"sentence": "fine", "label": 1.5}', '{"sentence": "fine"}'])
def test_invalid_or_missing_jsonl_label(tmp_path, line):
    path = write(tmp_path, "d.jsonl", '{"sentence": "ok", "label": 1}\n' + line + "\n")
    error(read_labelled, path, "row 2 ", "`label`", "labels are ints or strings")


@pytest.mark.parametrize("line, fix", [("{not json", "each line must be one JSON object"),
                                       ("[1, 2]", "expected a JSON object per line")])
def test_bad_jsonl_line(tmp_path, line, fix):
    path = write(tmp_path, "d.jsonl", '{"sentence": "fine", "label": 1}\n' + line + "\n")
    error(read_labelled, path, f"{path}:2:", fix)


def test_not_utf8(tmp_path):
    error(read_labelled, write(tmp_path, "d.tsv", b"sentence\tlabel\ncaf\xe9\t1\n"),
          "not UTF-8 (byte 18)", "re-encode the file as UTF-8")


# --- stratified split --------------------------------------------------------------------------------------

LABELS = ["a"] * 70 + ["b"] * 23 + ["c"] * 7


def check_split(labels, fraction, seed):
    train, held = stratified_split(labels, fraction, seed)
    assert sorted(train + held) == list(range(len(labels)))  # disjoint and complete
    assert train == sorted(train) and held == sorted(held)
    counts, held_counts = Counter(labels), Counter(labels[i] for i in held)
    for label, n in counts.items():
        assert abs(held_counts[label] - n * fraction) <= 1  # each class keeps its share
    return train, held


def test_split_keeps_class_shares():
    _, held = check_split(LABELS, 0.2, 1)
    assert Counter(LABELS[i] for i in held) == {"a": 14, "b": 5, "c": 1}


def test_split_is_deterministic_per_seed():
    assert stratified_split(LABELS, 0.2, 1) == stratified_split(LABELS, 0.2, 1)
    assert stratified_split(LABELS, 0.2, 1)[1] != stratified_split(LABELS, 0.2, 2)[1]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="test fraction must be in"):
        stratified_split(LABELS, fraction)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["0", "1", "2", "neg"]), max_size=300),
       st.floats(0.01, 0.99), st.integers(0, 2**32 - 1))
def test_split_properties(labels, fraction, seed):
    assert check_split(labels, fraction, seed) == stratified_split(labels, fraction, seed)


def test_a_sample_is_exactly_n_with_each_class_in_its_share():
    for n in (1, 7, 20, 33):
        keep = stratified_sample(LABELS, n, 1)
        assert len(keep) == n and keep == sorted(set(keep))
        counts, kept = Counter(LABELS), Counter(LABELS[i] for i in keep)
        assert all(abs(kept[c] - n * counts[c] / len(LABELS)) < 1 for c in counts)
    assert stratified_sample(LABELS, 20, 1) == stratified_sample(LABELS, 20, 1) != stratified_sample(LABELS, 20, 2)
    assert stratified_sample(LABELS, None, 1) == stratified_sample(LABELS, 10**6, 1) == list(range(len(LABELS)))
