"""metrics.squad: the reference cases (CLI and API), every refusal, and the official logic."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from metrics import MetricsInputError
from metrics import squad

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "tests" / "fixtures" / "metric-cases" / "dev-first300"
DATA = CASE / "data.json"


def read(path: Path):
    return json.loads(path.read_text())


def assert_same_numbers(got, expected, where="") -> None:
    """Same structure and key order, numbers within 1e-9."""
    if isinstance(expected, dict):
        assert list(got) == list(expected), where
        for key in expected:
            assert_same_numbers(got[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, list):
        assert len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_same_numbers(g, e, f"{where}[{i}]")
    else:
        assert got == pytest.approx(expected, abs=1e-9, rel=0), where


def run_cli(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metrics.squad", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


# --- the reference cases

def test_reference_case_cli(tmp_path):
    out = tmp_path / "scores.json"
    run = run_cli(CASE / "full" / "preds.json", "--data", DATA, "--na-prob-file", CASE / "full" / "na_prob.json", "--out", out)
    assert run.returncode == 0, run.stderr
    expected = read(CASE / "full" / "expected.json")
    assert_same_numbers(json.loads(run.stdout), expected)
    assert_same_numbers(read(out), expected)
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]  # no temp file left behind
    # the fixture's probabilities go up to 1.48: accepted, with a one-line count
    assert run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert "warning: 11 of 300 no-answer probabilities are outside [0, 1]" in run.stderr


def test_reference_case_api():
    expected = read(CASE / "full" / "expected.json")
    dataset = squad.load_dataset(DATA)
    result = squad.score(dataset, read(CASE / "full" / "preds.json"), read(CASE / "full" / "na_prob.json"))
    assert_same_numbers(result, expected)
    assert_same_numbers(squad.evaluate(read(DATA), read(CASE / "full" / "preds.json"), read(CASE / "full" / "na_prob.json")),
                        expected["squad_v2"])


def test_missing_predictions_case_cli():
    run = run_cli(CASE / "missing5pct" / "preds.json", "--data", DATA, "--na-prob-file", CASE / "missing5pct" / "na_prob.json")
    assert run.returncode == 2
    assert json.loads(run.stdout) == read(CASE / "missing5pct" / "expected.json") == {"error": "missing predictions", "n_missing": 15}
    assert run.stderr.startswith("error: missing predictions for 15 of 300 questions (e.g. ")
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_missing_predictions_api():
    with pytest.raises(squad.MissingPredictions, match="missing predictions for 15 of 300") as info:
        squad.score(squad.load_dataset(DATA), read(CASE / "missing5pct" / "preds.json"))
    assert info.value.n_missing == 15 and isinstance(info.value, ValueError)


# --- every refusal: exit 2, one line on stderr naming the problem, no scores written

@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """Writes variants of the reference case; returns a function name -> path."""
    folder = tmp_path_factory.mktemp("bad")

    def write(name: str, content) -> Path:
        path = folder / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path
    return write


def preds_with(**changes):
    preds = read(CASE / "full" / "preds.json")
    preds.update(changes)
    return preds


def na_probs_with(**changes):
    probs = read(CASE / "full" / "na_prob.json")
    probs.update(changes)
    return probs


FIRST_ID = next(iter(read(CASE / "full" / "preds.json")))

BAD_INPUTS = {
    # name: (predictions, na_probs or None, data or None (= the fixture), words the message must hold)
    "unknown ids": (preds_with(**{"not-a-real-id": "x"}), None, None, ["predictions for 1 question ids that are not in the data", "not-a-real-id"]),
    "non-string answer": (preds_with(**{FIRST_ID: 42}), None, None, ["predictions for 1 questions are not strings", FIRST_ID]),
    "malformed predictions": ('{"a": "b",\n  oops}', None, None, ["preds.json is not valid JSON", "line 2 column 3"]),
    "predictions not an object": (["Normandy"], None, None, ["predictions must be a JSON object", "not a list"]),
    "na-probs missing": (preds_with(), {k: v for k, v in na_probs_with().items() if k != FIRST_ID}, None,
                         ["no-answer probabilities missing for 1 of 300 questions", FIRST_ID]),
    "na-prob not a number": (preds_with(), na_probs_with(**{FIRST_ID: "0.5"}), None, ["1 questions are not numbers", FIRST_ID]),
    # json.dumps writes NaN and Infinity literals, which json.load accepts
    "na-prob NaN": (preds_with(), na_probs_with(**{FIRST_ID: float("nan")}), None, ["1 questions are NaN or infinite", FIRST_ID]),
    "na-prob infinite": (preds_with(), na_probs_with(**{FIRST_ID: float("inf")}), None, ["1 questions are NaN or infinite"]),
    "na-prob unknown id": (preds_with(), na_probs_with(**{"not-a-real-id": 0.5}), None, ["not in the data", "not-a-real-id"]),
    "malformed na-probs": (preds_with(), "{\n\n]", None, ["no-answer probability file", "is not valid JSON", "line 3 column 1"]),
    "data not SQuAD": ({}, None, {"version": "v2.0", "data": [{"title": "x"}]},
                       ["data.json: data[0] has no 'paragraphs'", "expected official SQuAD JSON"]),
    "data answer without text": ({}, None, {"data": [{"paragraphs": [{"context": "c", "qas": [
        {"id": "q", "question": "?", "answers": [{"answer_start": 0}]}]}]}]},
        ["data.json: data[0].paragraphs[0].qas[0].answers[0] has no 'text'"]),
    "data is a list": ({}, None, [1, 2], ["data.json: the top level should be an object with 'data', found a list"]),
    "data is_impossible not a boolean": ({"q": ""}, None, {"data": [{"paragraphs": [{"context": "c", "qas": [
        {"id": "q", "question": "?", "answers": [], "is_impossible": "false"}]}]}]},
        ["data.json: data[0].paragraphs[0].qas[0].is_impossible should be true or false"]),
    "data id not a string": ({"q": ""}, None, {"data": [{"paragraphs": [{"context": "c", "qas": [
        {"id": None, "question": "?", "answers": []}]}]}]},
        ["data.json: data[0].paragraphs[0].qas[0].id should be str or int, found NoneType"]),
    "empty data": ({}, None, {"version": "v2.0", "data": []}, ["data.json holds no questions"]),
    # integers beyond float range (10**400) and beyond Python's int-from-text limit (5000 digits)
    "na-prob huge integer": (preds_with(), json.dumps(na_probs_with(**{FIRST_ID: "HUGE"})).replace('"HUGE"', "1" + "0" * 400),
                             None, ["na_prob.json: no-answer probabilities for 1 questions are NaN or infinite", FIRST_ID]),
    "na-prob 5000 digits": (preds_with(), json.dumps(na_probs_with(**{FIRST_ID: "HUGE"})).replace('"HUGE"', "9" * 5000),
                            None, ["na_prob.json: no-answer probabilities for 1 questions are NaN or infinite", FIRST_ID]),
    "na-prob 1e400": (preds_with(), json.dumps(na_probs_with(**{FIRST_ID: "HUGE"})).replace('"HUGE"', "1e400"),
                      None, ["na_prob.json: no-answer probabilities for 1 questions are NaN or infinite", FIRST_ID]),
    "na-prob a string": (preds_with(), na_probs_with(**{FIRST_ID: "high"}), None,
                         ["na_prob.json: no-answer probabilities for 1 questions are not numbers", FIRST_ID]),
    "prediction 5000 digits": (json.dumps(preds_with(**{FIRST_ID: "HUGE"})).replace('"HUGE"', "9" * 5000), None, None,
                               ["predictions for 1 questions are not strings", FIRST_ID]),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_cli(name, case, tmp_path):
    preds, na_probs, data, words = BAD_INPUTS[name]
    args = [case("preds.json", preds), "--data", case("data.json", data) if data is not None else DATA, "--out", tmp_path / "scores.json"]
    if na_probs is not None:
        args += ["--na-prob-file", case("na_prob.json", na_probs)]
    run = run_cli(*args)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and run.stderr.startswith("error: ")
    for word in words:
        assert word in run.stderr
    assert not list(tmp_path.iterdir())


def test_unreadable_file_cli(tmp_path):
    run = run_cli(tmp_path / "nope.json", "--data", DATA)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip() == f"error: cannot read predictions file {tmp_path / 'nope.json'}: No such file or directory"


@pytest.mark.parametrize("which", ["predictions", "data", "na-probs", "link to predictions", "other spelling of data"])
def test_out_that_is_an_input_is_refused(which, tmp_path):
    """--out naming an input (or a link to it, or another path to it) would overwrite it with the scores."""
    inputs = {"predictions": tmp_path / "preds.json", "data": tmp_path / "data.json", "na-probs": tmp_path / "na_prob.json"}
    for name, source in (("predictions", CASE / "full" / "preds.json"), ("data", DATA), ("na-probs", CASE / "full" / "na_prob.json")):
        inputs[name].write_bytes(source.read_bytes())
    (tmp_path / "link.json").symlink_to("preds.json")
    out = {"link to predictions": tmp_path / "link.json",
           "other spelling of data": tmp_path / "sub" / ".." / "data.json"}.get(which) or inputs[which]
    flag = {"predictions": "the predictions file", "link to predictions": "the predictions file",
            "data": "the --data file", "other spelling of data": "the --data file", "na-probs": "the --na-prob-file"}[which]
    run = run_cli(inputs["predictions"], "--data", inputs["data"], "--na-prob-file", inputs["na-probs"], "--out", out)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith(f"error: --out {out} is {flag} ") and run.stderr.count("\n") == 1
    assert "pass another --out path" in run.stderr
    assert inputs["predictions"].read_bytes() == (CASE / "full" / "preds.json").read_bytes()
    assert inputs["data"].read_bytes() == DATA.read_bytes()
    assert inputs["na-probs"].read_bytes() == (CASE / "full" / "na_prob.json").read_bytes()
    assert not (tmp_path / "sub").exists()


def test_negative_na_probs_are_scores_like_those_above_one(case):
    """Hugging Face's null-odds files hold score differences, some negative: the official script only
    compares them with the threshold and sorts them, so they are accepted, with the same one-line warning."""
    na_probs = case("na_prob.json", na_probs_with(**{FIRST_ID: -0.25}))
    run = run_cli(CASE / "full" / "preds.json", "--data", DATA, "--na-prob-file", na_probs)
    assert run.returncode == 0, run.stderr
    assert run.stderr == (f"warning: 12 of 300 no-answer probabilities are outside [0, 1] ({na_probs}); "
                          "used as unnormalised scores, as the official script does\n")  # 11 above 1, 1 below 0
    assert json.loads(run.stdout)["squad_v2"]["total"] == 300


def test_auxiliary_metric_that_cannot_be_computed_is_null(case):
    """The only answerable question's gold answer is blank: the official script scores it (only ""
    is right), BLEU has no reference words. The official numbers stand; BLEU is null, saying why."""
    data = squad_data(("a", [" "]), ("b", []))
    run = run_cli(case("preds.json", {"a": "", "b": ""}), "--data", case("data.json", data))
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["squad_v2"] == squad.evaluate(data, {"a": "", "b": ""})
    assert result["squad_v2"]["exact"] == 100.0
    assert result["bleu"] is None and result["rouge"] is not None and result["meteor"] is not None
    assert run.stderr == "warning: bleu reported as null: BLEU: every reference is empty (no words after 13a tokenisation)\n"


def test_no_data_offline_is_one_line(monkeypatch, capsys, case):
    import data.fetch
    from files import DataUnavailable

    def offline(name):
        raise DataUnavailable(f"cannot download {name}; pass a local copy with --data")
    monkeypatch.setattr(data.fetch, "fetch_file", offline)
    monkeypatch.setattr(squad, "fetch_file", offline)
    assert squad.main([str(case("preds.json", {}))]) == 2
    assert capsys.readouterr().err == "error: cannot download squad_v2_dev; pass a local copy with --data\n"


def test_api_refusals_are_value_errors():
    dataset = squad.load_dataset(DATA)
    with pytest.raises(MetricsInputError, match="not strings"):
        squad.evaluate(dataset, preds_with(**{FIRST_ID: None}))
    with pytest.raises(ValueError, match="are NaN or infinite"):
        squad.score(dataset, preds_with(), na_probs_with(**{FIRST_ID: float("nan")}))


# --- the official SQuAD logic on hand-made cases

@pytest.mark.parametrize("text, normal", [
    ("The Normans", "normans"),
    ("a  cat, an apple & the end.", "cat apple end"),
    ("Theatre anthem", "theatre anthem"),  # articles only as whole words
    ("  (1066)  ", "1066"),
    ("Saint-Denis", "saintdenis"),  # punctuation is dropped, not turned into spaces
    ("«Ça»", "«ça»"),  # only ASCII punctuation is dropped
    ("", ""),
])
def test_normalize_answer(text, normal):
    assert squad.normalize_answer(text) == normal


def test_exact_match_and_f1():
    assert squad.exact_match("the Eiffel Tower!", "Eiffel tower") == 1
    assert squad.exact_match("Eiffel", "Eiffel Tower") == 0
    assert squad.f1_score("Eiffel", "Eiffel Tower") == pytest.approx(2 / 3)  # P 1, R 1/2
    assert squad.f1_score("in the year 1066", "1066") == pytest.approx(0.5)  # P 1/3, R 1
    assert squad.f1_score("a a b", "a b b") == pytest.approx(2 / 3)  # overlap counts clip
    assert squad.f1_score("", "") == 1.0 and squad.f1_score("", "x") == 0.0 and squad.f1_score("x", "y") == 0.0


def squad_data(*questions):
    """One paragraph; each question is (id, [answer texts])."""
    qas = [{"id": qid, "question": "?", "answers": [{"text": t, "answer_start": 0} for t in answers]}
           for qid, answers in questions]
    return {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "c", "qas": qas}]}]}


def test_evaluate_by_hand():
    data = squad_data(("a", ["Paris", "the city of Paris"]), ("b", ["1066"]), ("c", []), ("d", []))
    preds = {"a": "city of Paris", "b": "1066 AD", "c": "", "d": "London"}
    assert squad.evaluate(data, preds) == {
        "exact": 50.0, "f1": 100 * (1 + 2 / 3 + 1 + 0) / 4, "total": 4,
        "HasAns_exact": 50.0, "HasAns_f1": 100 * (1 + 2 / 3) / 2, "HasAns_total": 2,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2,
    }
    # no-answer probabilities above the threshold turn predictions into "no answer"
    result = squad.evaluate(data, preds, {"a": 0.1, "b": 0.2, "c": 0.3, "d": 1.5})
    assert (result["exact"], result["NoAns_exact"]) == (75.0, 100.0)
    # best threshold: answer in order of probability; exact peaks after a, F1 after a and b (2/3)
    assert (result["best_exact"], result["best_exact_thresh"]) == (75.0, 0.1)
    assert (result["best_f1"], result["best_f1_thresh"]) == (pytest.approx(100 * (1 + 2 / 3 + 1 + 1) / 4), 0.2)
    # negative scores (null odds) as the official script takes them: none is above the threshold 1,
    # so no prediction becomes "no answer"; the search runs in the same order, so it peaks at the
    # same questions, reporting their (negative) scores
    result = squad.evaluate(data, preds, {"a": -2.5, "b": -1.0, "c": -0.5, "d": 0.5})
    assert (result["exact"], result["NoAns_exact"]) == (50.0, 50.0)
    assert (result["best_exact"], result["best_exact_thresh"]) == (75.0, -2.5)
    assert (result["best_f1"], result["best_f1_thresh"]) == (pytest.approx(100 * (1 + 2 / 3 + 1 + 1) / 4), -1.0)


def test_evaluate_omits_empty_categories_like_the_official_script():
    result = squad.evaluate(squad_data(("a", ["x"])), {"a": "x"})
    assert result == {"exact": 100.0, "f1": 100.0, "total": 1, "HasAns_exact": 100.0, "HasAns_f1": 100.0, "HasAns_total": 1}
    full = squad.score(squad_data(("a", [])), {"a": ""})
    assert list(full["squad_v2"]) == ["exact", "f1", "total", "NoAns_exact", "NoAns_f1", "NoAns_total"]
    assert full["bleu"] is full["rouge"] is full["meteor"] is None and full["n_answerable_scored"] == 0


def test_answers_that_normalise_to_nothing_count_as_no_answer_gold():
    data = squad_data(("a", ["The", "!"]))  # answerable by its list, but only "" can match
    assert squad.evaluate(data, {"a": ""})["HasAns_exact"] == 100.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=20), st.text(max_size=20), st.floats(0, 2)), min_size=1, max_size=8))
def test_evaluate_properties(items):
    """Scores lie in [0, 100]; predicting a gold answer is always exact."""
    data = squad_data(*((str(i), [gold] if gold.strip() else []) for i, (gold, _, _) in enumerate(items)))
    preds = {str(i): pred for i, (_, pred, _) in enumerate(items)}
    result = squad.evaluate(data, preds, {str(i): p for i, (_, _, p) in enumerate(items)})
    for key in ("exact", "f1", "best_exact", "best_f1"):
        assert 0 <= result[key] <= 100
    perfect = squad.evaluate(data, {str(i): gold if gold.strip() else "" for i, (gold, _, _) in enumerate(items)})
    assert perfect["exact"] == perfect["f1"] == 100.0


# --- a runaway prediction: scored in seconds, not minutes ----------------------------------------

def test_ten_megabyte_prediction_is_scored_in_seconds(tmp_path):
    """One prediction of 10 MB (as a model stuck in a loop writes): natural words in 20,000 lines,
    its gold answer over and over, 1 MB with no space ("a,b.c'd(e)"), 1 MB of periods. Quadratic
    steps (a Counter of every n-gram, LCS tables over the whole prediction, synonym sets for each
    of 2 million words, nltk's per-call regex time limit, normalising it once per gold answer) took
    3.5 minutes here; each metric now costs about linear time. No timing is asserted: 60 s is the
    bound within which it must finish at all."""
    import random
    data, preds = read(DATA), read(CASE / "full" / "preds.json")
    words = " ".join(p["context"] for a in data["data"] for p in a["paragraphs"]).split()
    qa = next(q for a in data["data"] for p in a["paragraphs"] for q in p["qas"] if q["answers"])
    rng = random.Random(0)
    text = "\n".join(" ".join(rng.choices(words, k=50)) for _ in range(20_000))[:6_000_000]
    text += " " + (qa["answers"][0]["text"] + " ") * (2_000_000 // (len(qa["answers"][0]["text"]) + 1))
    text = (text + "a,b.c'd(e)" * 100_000 + "." * 1_000_000)[:10_000_000]
    preds[qa["id"]] = text
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    run = subprocess.run([sys.executable, "-m", "metrics.squad", str(tmp_path / "preds.json"), "--data", str(DATA)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout, parse_constant=lambda c: pytest.fail(f"{c} in the output"))
    expected = read(CASE / "full" / "expected.json")
    assert result["n_answerable_scored"] == expected["n_answerable_scored"]
    assert result["bleu"]["translation_length"] > 2_000_000  # the long prediction's words were all counted
    for value in (result["rouge"]["rougeL"], result["meteor"]["meteor"], result["bleu"]["bleu"]):
        assert 0.0 <= value <= 1.0


def test_scores_are_strict_json():
    """NaN and Infinity are not JSON: a result holding one is refused, naming where, never written."""
    assert squad.format_scores({"a": {"b": [0.5, 1]}}) == json.dumps({"a": {"b": [0.5, 1]}}, indent=1)
    with pytest.raises(MetricsInputError, match=r"not finite numbers at squad_v2\.f1, bleu\.precisions\[1\]"):
        squad.format_scores({"squad_v2": {"f1": float("nan")}, "bleu": {"precisions": [0.0, float("inf")]}})
    # the largest finite probabilities and thresholds stay finite numbers in the output
    data = squad_data(("a", ["x"]), ("b", []))
    result = squad.score(data, {"a": "x", "b": ""}, {"a": 1.7976931348623157e308, "b": 0.0})
    text = squad.format_scores(result)
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c))["squad_v2"]["best_f1_thresh"] == 1.7976931348623157e308
