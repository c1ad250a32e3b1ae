"""SQuAD 2.0 scoring: the official evaluate-v2.0.py numbers, plus BLEU, ROUGE and METEOR of
the answerable questions' predictions against all their gold answers.

    python -m metrics.squad preds.json [--data dev-v2.0.json] [--na-prob-file na_prob.json] [--out scores.json]

From Python, score(load_dataset(path), preds, na_probs) returns what the CLI prints, and
format_scores() of it is the CLI's text.
Bad input raises MetricsInputError (the CLI prints its one-line message and exits 2).
"""
import argparse
import json
import math
import numbers
import re
import string
import sys
from collections import Counter
from pathlib import Path

from data.fetch import DataUnavailable, fetch_file, write_atomic
from metrics import MetricsInputError
from metrics.bleu import bleu
from metrics.meteor import meteor
from metrics.rouge import rouge
from metrics.wordnet import WordNetMissing

NA_PROB_THRESH = 1.0  # the official default: "no answer" only where the probability exceeds 1


class MissingPredictions(MetricsInputError):
    def __init__(self, missing: list[str], total: int):
        self.n_missing = len(missing)
        super().__init__(f"missing predictions for {len(missing)} of {total} questions ({_examples(missing)}); "
                         'every question id in the data needs an answer, "" for no answer')


def _examples(ids: list, n: int = 3) -> str:
    return "e.g. " + ", ".join(map(str, ids[:n])) + (", ..." if len(ids) > n else "")


# --- official SQuAD answer matching

_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, drop ASCII punctuation and the articles a/an/the, collapse whitespace."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_DROP_PUNCTUATION)).split())


def exact_match(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the normalised answers; an empty side scores 1 only if both are empty."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = (Counter(pred) & Counter(ref)).total()
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


# --- data and input checks

def read_json(path: Path | str, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise MetricsInputError(f"cannot read {what} {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise MetricsInputError(f"{what} {path} is not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise MetricsInputError(f"{what} {path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def _field(obj, key: str, kind: type, where: str, source: str):
    if not isinstance(obj, dict):
        raise MetricsInputError(f"{source} is not SQuAD format: {where} is not an object")
    if not isinstance(obj.get(key), kind):
        raise MetricsInputError(f"{source} is not SQuAD format: {where}.{key} is missing or not a {kind.__name__}")
    return obj[key]


def _checked_articles(dataset, source: str) -> list[dict]:
    """The articles of a SQuAD JSON object (or the list itself), checked for everything
    scoring and training read: contexts, questions, ids, answer texts and starts."""
    articles = dataset.get("data") if isinstance(dataset, dict) else dataset
    if not isinstance(articles, list):
        raise MetricsInputError(f'{source} is not SQuAD format: expected an object with a "data" list of articles')
    seen = set()
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(_field(article, "paragraphs", list, f"data[{a}]", source)):
            where = f"data[{a}].paragraphs[{p}]"
            _field(paragraph, "context", str, where, source)
            for q, qa in enumerate(_field(paragraph, "qas", list, where, source)):
                qid = _field(qa, "id", str, f"{where}.qas[{q}]", source)
                _field(qa, "question", str, f"{where}.qas[{q}]", source)
                for i, answer in enumerate(_field(qa, "answers", list, f"{where}.qas[{q}]", source)):
                    _field(answer, "text", str, f"{where}.qas[{q}].answers[{i}]", source)
                    _field(answer, "answer_start", int, f"{where}.qas[{q}].answers[{i}]", source)
                if qid in seen:
                    raise MetricsInputError(f"{source} is not SQuAD format: question id {qid} appears twice")
                seen.add(qid)
    if not seen:
        raise MetricsInputError(f"{source} has no questions")
    return articles


def load_dataset(path: Path | str) -> list[dict]:
    """The articles of a SQuAD-format JSON file, checked; errors name the file and the problem."""
    return _checked_articles(read_json(path, "data file"), source=str(path))


def gold_answers(dataset) -> dict[str, list[str]]:
    """question id -> gold answer texts ([] if unanswerable), in data order. dataset: the
    JSON object of a SQuAD file or its list of articles."""
    return {qa["id"]: [a["text"] for a in qa["answers"]]
            for article in _checked_articles(dataset, source="dataset")
            for paragraph in article["paragraphs"] for qa in paragraph["qas"]}


def _check_predictions(preds, gold: dict) -> None:
    if not isinstance(preds, dict):
        raise MetricsInputError(f"predictions must be a JSON object {{question id: answer text}}, not a {type(preds).__name__}")
    not_text = [q for q, answer in preds.items() if not isinstance(answer, str)]
    if not_text:
        raise MetricsInputError(f"predictions for {len(not_text)} questions are not strings ({_examples(not_text)}); "
                                'an answer is text, "" for no answer')
    unknown = [q for q in preds if q not in gold]
    if unknown:
        raise MetricsInputError(f"predictions for {len(unknown)} question ids that are not in the data ({_examples(unknown)}); wrong data file?")
    missing = [q for q in gold if q not in preds]
    if missing:
        raise MissingPredictions(missing, len(gold))


def _checked_na_probs(na_probs, gold: dict) -> dict[str, float]:
    if not isinstance(na_probs, dict):
        raise MetricsInputError(f"no-answer probabilities must be a JSON object {{question id: number}}, not a {type(na_probs).__name__}")
    problems = [
        ("are not numbers", lambda v: not isinstance(v, numbers.Real) or isinstance(v, bool)),
        ("are NaN or infinite", lambda v: not math.isfinite(v)),
        ("are negative", lambda v: v < 0),
    ]
    for problem, is_bad in problems:
        bad = [q for q, v in na_probs.items() if is_bad(v)]
        if bad:
            raise MetricsInputError(f"no-answer probabilities for {len(bad)} questions {problem} ({_examples(bad)})")
    unknown = [q for q in na_probs if q not in gold]
    if unknown:
        raise MetricsInputError(f"no-answer probabilities for {len(unknown)} question ids that are not in the data ({_examples(unknown)})")
    missing = [q for q in gold if q not in na_probs]
    if missing:
        raise MetricsInputError(f"no-answer probabilities missing for {len(missing)} of {len(gold)} questions ({_examples(missing)})")
    above_one = sum(v > 1 for v in na_probs.values())
    if above_one:
        print(f"warning: {above_one} of {len(na_probs)} no-answer probabilities are above 1; "
              "used as unnormalised scores, as the official script does", file=sys.stderr)
    return {q: float(v) for q, v in na_probs.items()}  # file order: it breaks ties in best-threshold search


# --- official SQuAD 2.0 evaluation

def _means(exact: dict, f1: dict, qids: list[str]) -> dict:
    return {"exact": 100.0 * sum(exact[q] for q in qids) / len(qids),
            "f1": 100.0 * sum(f1[q] for q in qids) / len(qids),
            "total": len(qids)}


def _best_threshold(preds: dict, raw: dict, na_probs: dict, has_answer: dict) -> tuple[float, float]:
    """Answer questions in order of rising no-answer probability, starting from 'no answer to
    anything'; return the best score seen and the probability at which it was reached."""
    current = best = sum(not h for h in has_answer.values())
    best_thresh = 0.0
    for qid in sorted(na_probs, key=na_probs.get):
        if has_answer[qid]:
            current += raw[qid]
        elif preds[qid]:
            current -= 1
        if current > best:
            best, best_thresh = current, na_probs[qid]
    return 100.0 * best / len(raw), best_thresh


def evaluate(dataset, preds: dict[str, str], na_probs: dict[str, float] | None = None,
             na_prob_thresh: float = NA_PROB_THRESH) -> dict:
    """The official SQuAD 2.0 numbers: exact, f1, total, HasAns_*/NoAns_* (where that category
    has questions) and, given na_probs, best_exact/best_f1 with their thresholds. Without
    na_probs every probability counts as 0, as in the official script."""
    gold = gold_answers(dataset)
    _check_predictions(preds, gold)
    probs = dict.fromkeys(gold, 0.0) if na_probs is None else _checked_na_probs(na_probs, gold)
    exact_raw, f1_raw = {}, {}
    for qid, answers in gold.items():
        golds = [a for a in answers if normalize_answer(a)] or [""]  # unanswerable: only "" is right
        exact_raw[qid] = max(exact_match(preds[qid], g) for g in golds)
        f1_raw[qid] = max(f1_score(preds[qid], g) for g in golds)
    has_answer = {qid: bool(answers) for qid, answers in gold.items()}
    # predicted "no answer" (probability above the threshold) scores 1 exactly where there is none
    exact = {q: float(not has_answer[q]) if probs[q] > na_prob_thresh else s for q, s in exact_raw.items()}
    f1 = {q: float(not has_answer[q]) if probs[q] > na_prob_thresh else s for q, s in f1_raw.items()}
    result = _means(exact, f1, list(gold))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [q for q, h in has_answer.items() if h == wanted]
        if qids:
            result.update({f"{prefix}_{k}": v for k, v in _means(exact, f1, qids).items()})
    if na_probs is not None:
        result["best_exact"], result["best_exact_thresh"] = _best_threshold(preds, exact_raw, probs, has_answer)
        result["best_f1"], result["best_f1_thresh"] = _best_threshold(preds, f1_raw, probs, has_answer)
    return result


def score(dataset, preds: dict[str, str], na_probs: dict[str, float] | None = None) -> dict:
    """What `python -m metrics.squad` prints: {"squad_v2": evaluate(...), "bleu", "rouge",
    "meteor", "n_answerable_scored"}; the text metrics are over the answerable questions only
    (None if there are none), each prediction against all its gold answers."""
    result = {"squad_v2": evaluate(dataset, preds, na_probs)}
    answerable = {qid: answers for qid, answers in gold_answers(dataset).items() if answers}
    predictions, references = [preds[q] for q in answerable], list(answerable.values())
    for name, metric in (("bleu", bleu), ("rouge", rouge), ("meteor", meteor)):
        result[name] = metric(predictions, references) if answerable else None
    result["n_answerable_scored"] = len(answerable)
    return result


# --- command line

def _default_data() -> Path:
    try:
        return fetch_file("squad_v2_dev")
    except DataUnavailable as e:
        raise MetricsInputError(str(e)) from None


def format_scores(result: dict) -> str:
    """The CLI's JSON text of score()'s result, for scripts that print the same."""
    return json.dumps(result, indent=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metrics.squad", description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", type=Path, help='JSON {question id: answer text}, "" for no answer')
    parser.add_argument("--data", type=Path, help="SQuAD-format JSON (default: the SQuAD 2.0 dev set, fetched)")
    parser.add_argument("--na-prob-file", type=Path, help="JSON {question id: no-answer probability}")
    parser.add_argument("--out", type=Path, help="also write the scores to this file")
    args = parser.parse_args(argv)
    try:
        dataset = load_dataset(args.data or _default_data())
        preds = read_json(args.predictions, "predictions file")
        na_probs = read_json(args.na_prob_file, "no-answer probability file") if args.na_prob_file else None
        text = format_scores(score(dataset, preds, na_probs))
        if args.out:
            try:
                write_atomic(args.out, text + "\n")
            except OSError as e:
                raise MetricsInputError(f"cannot write {args.out}: {e.strerror or e}") from None
    except (MetricsInputError, WordNetMissing) as e:
        if isinstance(e, MissingPredictions):
            print(json.dumps({"error": "missing predictions", "n_missing": e.n_missing}))
        print("error: " + " ".join(str(e).splitlines()), file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
