"""One reading of SQuAD: the training reader (data.squad_json.read_squad, and to_squad_json's test_data.json)
and the scorer (metrics.squad) read every legal shape of the same data alike, and as the official
evaluate-v2.0.py does; ambiguous files get the same reading and the same one-line warning from both."""
import json
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from data.squad_json import SquadFormatError, read_questions, read_squad, to_squad_json
from metrics import MetricsInputError
from metrics import squad as metrics_squad

ROOT = Path(__file__).resolve().parents[1]


# --- the official rule, restated independently ----------------------------------------------------

def official_normalize(text: str) -> str:
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def official_reading(root: dict) -> dict[str, tuple[bool, list[str]]]:
    """id -> (has answer, gold texts) as evaluate-v2.0.py computes them: it reads only id and answers;
    qid_to_has_ans = bool(qa['answers']); golds = texts that normalise to something, else ['']; a
    repeated id overwrites the earlier one. (It would not match integer ids with the string keys of
    a predictions file at all; this restatement writes them as strings, the project's reading.)"""
    reading = {}
    for article in root["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = qa.get("answers", [])
                golds = [a["text"] for a in answers if official_normalize(a["text"])] or [""]
                qid = str(qa["id"])
                reading.pop(qid, None)  # the project keeps the last occurrence where it stands
                reading[qid] = (bool(answers), golds)
    return reading


def official_exact(root: dict, preds: dict[str, str]) -> dict:
    reading = official_reading(root)
    exact = {q: max(float(official_normalize(preds[q]) == official_normalize(g)) for g in golds)
             for q, (_, golds) in reading.items()}
    has = [q for q, (h, _) in reading.items() if h]
    return {"exact": 100 * sum(exact.values()) / len(exact), "total": len(exact), "HasAns_total": len(has),
            "NoAns_total": len(exact) - len(has)}


# --- one data set, many legal shapes ---------------------------------------------------------------

CONTEXT_A = "The Normans gave their name to Normandy, a region in France, in the 10th and 11th centuries."
CONTEXT_B = "Rollo was a Viking leader. His descendants swore fealty to the Frankish kings."
# (id, question, context, [(answer text, answer_start)]): [] means unanswerable
QUESTIONS = [
    ("1", "In what country is Normandy?", CONTEXT_A, [("France", 53), ("France", 53)]),
    ("2", "When did the Normans give their name?", CONTEXT_A, [("10th and 11th centuries", 68)]),
    ("3", "Who gave their name to Rome?", CONTEXT_A, []),
    ("4", "Who was Rollo?", CONTEXT_B, [("a Viking leader", 10), ("Viking leader", 12)]),
    ("5", "To whom did Rollo swear fealty?", CONTEXT_B, []),
]


def qa_entry(qid, question, answers, flag="match", ids=str, starts=True, plausible=True):
    entry = {"id": ids(qid), "question": question,
             "answers": [{"text": t, "answer_start": s} if starts else {"text": t} for t, s in answers]}
    if flag == "match":
        entry["is_impossible"] = not answers
    if plausible and not answers:
        entry["plausible_answers"] = [{"text": "Normans", "answer_start": 4}]
    return entry


def shaped(flag="match", ids=str, starts=True, title=True, extra=False, plausible=True, questions=QUESTIONS):
    articles = {}
    for qid, question, context, answers in questions:
        articles.setdefault(context, []).append(qa_entry(qid, question, answers, flag, ids, starts, plausible))
    data = []
    for n, (context, qas) in enumerate(articles.items()):
        article = {"paragraphs": [{"context": context, "qas": qas}]}
        if title:
            article["title"] = f"Article_{n}"
        data.append(article)
    root = {"version": "v2.0", "data": data}
    if extra:  # unknown keys at every level are ignored
        root["extra"] = {"x": 1}
        for article in data:
            article["lang"] = "en"
            for paragraph in article["paragraphs"]:
                paragraph["source"] = None
                for qa in paragraph["qas"]:
                    qa["annotator"] = 7
                    for answer in qa["answers"]:
                        answer["confidence"] = 0.5
    return root


CLEAN_SHAPES = {  # legal and unambiguous: no warning from either tool
    "official v2": shaped(),
    "no is_impossible": shaped(flag=None),
    "extra keys, no version": {k: v for k, v in shaped(extra=True).items() if k != "version"},
    "no titles": shaped(title=False),
    "no plausible_answers": shaped(plausible=False),
    "no answer_start": shaped(starts=False),
}


def write(tmp_path, root, name="data.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(root))
    return path


def training_reading(path: Path) -> dict[str, tuple[bool, list[str]]]:
    examples, _ = read_squad(path)
    return {ex.id: (ex.has_answer, ex.answers) for ex in examples}


def scoring_reading(path: Path) -> dict[str, tuple[bool, list[str]]]:
    return {q: (bool(texts), texts) for q, texts in metrics_squad.gold_answers(metrics_squad.load_dataset(path)).items()}


def shared_reading(path: Path) -> dict[str, tuple[bool, list[str]]]:
    return {q.id: (q.has_answer, q.texts) for q in read_questions(path, warn=False)[0]}


def golds_of(reading):
    """The official's view of a reading: (has answer, golds after dropping blank-normalising texts)."""
    return {q: (h, [t for t in texts if official_normalize(t)] or [""]) for q, (h, texts) in reading.items()}


@pytest.mark.parametrize("shape", CLEAN_SHAPES)
def test_every_clean_shape_reads_the_same_everywhere(tmp_path, capsys, shape):
    root = CLEAN_SHAPES[shape]
    path = write(tmp_path, root)
    expected = official_reading(CLEAN_SHAPES["official v2"])
    training, scoring = training_reading(path), scoring_reading(path)
    assert list(training) == list(scoring) == list(expected) == ["1", "2", "3", "4", "5"]
    assert golds_of(training) == golds_of(scoring) == golds_of(shared_reading(path)) == expected
    # the file train_qa.py writes for rescoring reads the same again
    test_data = write(tmp_path, to_squad_json(read_squad(path)[0]), "test_data.json")
    assert scoring_reading(test_data) == scoring
    assert capsys.readouterr().err == ""


def test_integer_ids_are_read_as_their_strings_by_both(tmp_path, capsys):
    path = write(tmp_path, shaped(ids=int))
    training, scoring = training_reading(path), scoring_reading(path)
    assert training == scoring and list(training) == ["1", "2", "3", "4", "5"]
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"warning: {path}: 5 ids are JSON integers: read as strings "
                     "(as the official evaluate-v2.0.py reads them)"] * 2


def test_missing_answers_key_only_where_is_impossible_says_so(tmp_path):
    root = shaped()
    for article in root["data"]:
        for qa in article["paragraphs"][0]["qas"]:
            if qa["is_impossible"]:
                del qa["answers"]
    path = write(tmp_path, root)
    assert training_reading(path) == scoring_reading(path) == training_reading(write(tmp_path, shaped(), "ok.json"))
    del root["data"][0]["paragraphs"][0]["qas"][0]["answers"]  # an answerable question: nothing to go by
    path = write(tmp_path, root)
    with pytest.raises(SquadFormatError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\] has no 'answers'"):
        read_squad(path)
    with pytest.raises(MetricsInputError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\] has no 'answers'"):
        metrics_squad.load_dataset(path)


# --- ambiguous files: one documented reading, one warning, both tools -----------------------------

def ambiguous_root():
    root = shaped()
    qas_a, qas_b = root["data"][0]["paragraphs"][0]["qas"], root["data"][1]["paragraphs"][0]["qas"]
    qas_a[0]["is_impossible"] = True  # "1" keeps its answers: answerable, as the official script reads it
    qas_b[1]["is_impossible"] = False  # "5" has no answers: unanswerable
    # "2" first appears as an unanswerable decoy: the last occurrence is kept
    qas_a.insert(0, {"id": "2", "question": "decoy", "answers": [], "is_impossible": True})
    return root


def test_ambiguous_file_same_reading_and_warning_in_both_tools(tmp_path, capsys):
    root = ambiguous_root()
    path = write(tmp_path, root)
    expected = official_reading(root)
    assert expected["1"][0] and not expected["5"][0] and expected["2"] == (True, ["10th and 11th centuries"])
    training = training_reading(path)
    train_err = capsys.readouterr().err
    scoring = scoring_reading(path)
    score_err = capsys.readouterr().err
    assert golds_of(training) == golds_of(scoring) == expected
    assert list(training) == list(scoring) == ["1", "2", "3", "4", "5"]
    assert train_err == score_err == (
        f"warning: {path}: 1 questions marked is_impossible have answers: read as answerable; "
        "1 questions marked is_impossible false have no answers: read as unanswerable; "
        "1 question ids occur more than once: the last occurrence kept, 1 earlier ones dropped "
        "(as the official evaluate-v2.0.py reads them)\n")
    # scoring the file: the official numbers of that reading, and the warning once
    preds = {"1": "France", "2": "", "3": "", "4": "Viking leader", "5": "Rollo"}
    result = metrics_squad.score(metrics_squad.load_dataset(path), preds)
    assert capsys.readouterr().err.count("warning:") == 1
    assert {k: result["squad_v2"][k] for k in ("exact", "total", "HasAns_total", "NoAns_total")} == \
        pytest.approx(official_exact(root, preds))


def test_ambiguous_file_cli_warns_once_and_scores(tmp_path):
    root = ambiguous_root()
    path = write(tmp_path, root)
    preds = write(tmp_path, {"1": "France", "2": "", "3": "", "4": "Viking leader", "5": "Rollo"}, "preds.json")
    run = subprocess.run([sys.executable, "-m", "metrics.squad", str(preds), "--data", str(path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.startswith(f"warning: {path}: 1 questions marked")
    squad_v2 = json.loads(run.stdout)["squad_v2"]
    assert squad_v2["exact"] == pytest.approx(official_exact(root, json.loads(preds.read_text()))["exact"])


def test_blank_answer_texts(tmp_path, capsys):
    """An answers list of blank texts is answerable to the official script (HasAns) with "" as the only
    gold; training cannot locate such an answer: it skips the question and reports it."""
    questions = QUESTIONS + [("6", "What is nothing?", CONTEXT_B, [("", 0), ("  ", 3)]),
                             ("7", "Which article?", CONTEXT_B, [("the", 0)])]
    root = shaped(questions=questions)
    path = write(tmp_path, root)
    expected = official_reading(root)
    assert expected["6"] == (True, [""]) and expected["7"] == (True, [""])
    assert golds_of(scoring_reading(path)) == golds_of(shared_reading(path)) == expected
    examples, report = read_squad(path)
    assert [ex.id for ex in examples] == ["1", "2", "3", "4", "5", "7"]  # "7": "the", found once in CONTEXT_B
    assert (report.questions_without_answers, report.answers_missing, report.starts_fixed) == (1, 2, 1)
    # what train_qa.py writes as test_data.json scores "7" as the official script scores the original
    assert golds_of(scoring_reading(write(tmp_path, to_squad_json(examples), "test_data.json")))["7"] == (True, [""])
    preds = {q: "" for q in expected}
    assert metrics_squad.evaluate(root, preds)["HasAns_total"] == 5
    assert capsys.readouterr().err == ""


# --- errors stay errors, the same in both ---------------------------------------------------------

@pytest.mark.parametrize("root, where", [
    ({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": 1.5, "question": "?", "answers": []}]}]}]},
     r"data\[0\]\.paragraphs\[0\]\.qas\[0\]\.id should be str or int, found float"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": True, "question": "?", "answers": []}]}]}]},
     r"qas\[0\]\.id should be str or int, found bool"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [
        {"id": "a", "question": "?", "answers": [], "is_impossible": 1}]}]}]},
     r"qas\[0\]\.is_impossible should be true or false, found 1"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [
        {"id": "a", "question": "?", "answers": [{"text": "c", "answer_start": True}]}]}]}]},
     r"answers\[0\]\.answer_start should be int, found bool"),
    ({"data": [{"paragraphs": [{"context": 3, "qas": []}]}]}, r"data\[0\]\.paragraphs\[0\]\.context should be str"),
    ([{"paragraphs": []}], "the top level should be an object with 'data', found a list"),
    ({"data": []}, "holds no questions"),
])
def test_malformed_is_the_same_one_line_error(tmp_path, root, where):
    path = write(tmp_path, root)
    with pytest.raises(SquadFormatError, match=where) as training:
        read_squad(path)
    with pytest.raises(MetricsInputError, match=where) as scoring:
        metrics_squad.load_dataset(path)
    assert str(training.value) == str(scoring.value) and "\n" not in str(scoring.value)


def test_huge_integer_in_a_data_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(shaped()).replace('"answer_start": 53', '"answer_start": ' + "9" * 5000, 1))
    with pytest.raises(SquadFormatError, match="holds an integer with 5000 digits"):
        read_squad(path)
    with pytest.raises(MetricsInputError, match="holds an integer with 5000 digits"):
        metrics_squad.load_dataset(path)


# --- random files: both readers equal the official restatement --------------------------------------

texts = st.sampled_from(["France", "the", "", " ", "Viking leader", "a Viking", "10th", "!"])


@st.composite
def random_roots(draw):
    data = []
    for _ in range(draw(st.integers(1, 3))):
        qas = []
        for _ in range(draw(st.integers(0, 4))):
            answers = [{"text": t, "answer_start": 0} for t in draw(st.lists(texts, max_size=3))]
            qa = {"id": draw(st.sampled_from(["a", "b", "c", "d", "e", "f", 7, 8])), "question": "?", "answers": answers}
            flag = draw(st.sampled_from([None, True, False]))
            if flag is not None:
                qa["is_impossible"] = flag
            qas.append(qa)
        data.append({"title": "t", "paragraphs": [{"context": "France, the Viking leader", "qas": qas}]})
    return {"data": data}


@settings(max_examples=60, deadline=None)
@given(random_roots())
def test_random_files_match_the_official_reading(root):
    try:
        expected = official_reading(root)
    except KeyError:  # pragma: no cover - every generated question has answers
        raise
    if not expected:
        with pytest.raises(MetricsInputError, match="holds no questions"):
            metrics_squad.gold_answers(root)
        return
    shared = {q.id: (q.has_answer, q.texts) for q in read_questions(root, warn=False)[0]}
    scoring = {q: (bool(t), t) for q, t in metrics_squad.gold_answers(metrics_squad._articles(
        read_questions(root, warn=False)[0])).items()}
    assert list(shared) == list(scoring) == list(expected)
    assert golds_of(shared) == golds_of(scoring) == expected
    preds = {q: "France" for q in expected}
    got = metrics_squad.evaluate(root, preds)
    want = official_exact(root, preds)
    assert got["exact"] == pytest.approx(want["exact"]) and got["total"] == want["total"]
    assert got.get("HasAns_total", 0) == want["HasAns_total"] and got.get("NoAns_total", 0) == want["NoAns_total"]


# --- the metrics package needs no torch ---------------------------------------------------------------

def test_metrics_and_the_reader_import_without_torch():
    code = ("import sys\n"
            "class NoTorch:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'safetensors', 'transformers'):\n"
            "            raise ImportError(f'{name} is blocked')\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "import metrics.squad, data.squad, data.fetch\n"
            "assert 'torch' not in sys.modules")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
