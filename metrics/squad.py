"""SQuAD 2.0 scoring: the official evaluate-v2.0.py numbers, plus BLEU, ROUGE and METEOR of
the answerable questions' predictions against all their gold answers.

    python -m metrics.squad preds.json [--data dev-v2.0.json] [--na-prob-file na_prob.json] [--out scores.json]

From Python, score(load_dataset(path), preds, na_probs) returns what the CLI prints, and
format_scores() of it is the CLI's text (strict JSON: never NaN or Infinity).
The data file is read by data.squad_json.read_questions, the one reading of SQuAD JSON that training
shares (which questions exist and which are answerable: the official script's rules; ambiguous
files get a one-line warning on stderr). Bad input raises MetricsInputError (the CLI prints its
one-line message and exits 2), as is an --out that is one of the input files. A failed --out write
still prints the scores, then its one-line error, exit 2.
"""
import json
import math
import numbers
import os
import re
import string
import sys
from collections import Counter
from pathlib import Path

from data.fetch import fetch_file
from data.squad_json import Question, SquadFormatError, read_questions
from files import DataUnavailable, write_atomic
from metrics import CliParser, MetricsInputError
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
_PUNCTUATION_BYTES = string.punctuation.encode("ascii")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, drop ASCII punctuation and the articles a/an/the, collapse whitespace."""
    text = text.lower()
    if text.isascii():  # the same deletion, at C speed on long texts
        text = text.encode("ascii").translate(None, _PUNCTUATION_BYTES).decode("ascii")
    else:
        text = text.translate(_DROP_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def _overlap_f1(pred: Counter, n_pred: int, gold_tokens: list[str]) -> float:
    if not n_pred or not gold_tokens:
        return float(n_pred == len(gold_tokens) == 0)
    common = (pred & Counter(gold_tokens)).total()
    if common == 0:
        return 0.0
    precision, recall = common / n_pred, common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the normalised answers; an empty side scores 1 only if both are empty."""
    pred = normalize_answer(prediction).split()
    return _overlap_f1(Counter(pred), len(pred), normalize_answer(gold).split())


# --- data and input checks

def _json_int(digits: str) -> int | float:
    """JSON integers as ints; one beyond Python's int-from-text limit (4300 digits) as +-inf, which
    the checks then refuse by name instead of json.load raising a bare ValueError."""
    try:
        return int(digits)
    except ValueError:
        return -math.inf if digits.startswith("-") else math.inf


def read_json(path: Path | str, what: str):
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f, parse_int=_json_int)
    except OSError as e:
        raise MetricsInputError(f"cannot read {what} {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise MetricsInputError(f"{what} {path} is not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise MetricsInputError(f"{what} {path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def _questions(dataset, name: str | None = None) -> list[Question]:
    """data.squad_json.read_questions (the project's one reading of SQuAD JSON, shared with training),
    its refusals as MetricsInputError."""
    try:
        return read_questions(dataset, name)[0]
    except SquadFormatError as e:
        raise MetricsInputError(" ".join(str(e).splitlines())) from None


def _articles(questions: list[Question]) -> list[dict]:
    """Official-format articles holding exactly these questions, in their order, with nothing left
    to interpret: string ids, each once, is_impossible == (no answers)."""
    articles: list[dict] = []
    for q in questions:
        answers = [{"text": text} if start is None else {"text": text, "answer_start": start}
                   for text, start in q.answers]
        qa = {"id": q.id, "question": q.question, "is_impossible": not q.answers, "answers": answers}
        if not articles or articles[-1]["title"] != q.title:
            articles.append({"title": q.title, "paragraphs": []})
        paragraphs = articles[-1]["paragraphs"]
        if not paragraphs or paragraphs[-1]["context"] != q.context:
            paragraphs.append({"context": q.context, "qas": []})
        paragraphs[-1]["qas"].append(qa)
    return articles


def load_dataset(path: Path | str) -> list[dict]:
    """The articles of a SQuAD-format file as data.squad_json.read_questions reads it (which questions
    exist, which are answerable: the official script's rules, shared with training; ambiguities
    are warned about once, on stderr), rewritten so that nothing is left to interpret. Errors name
    the file and the problem."""
    return _articles(_questions(Path(path)))


def gold_answers(dataset) -> dict[str, list[str]]:
    """question id -> gold answer texts ([] if unanswerable), in data order. dataset: the
    JSON object of a SQuAD file or its list of articles, read by data.squad_json.read_questions."""
    return {q.id: q.texts for q in _questions(dataset)}


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


def _as_float(value) -> float | None:
    """A JSON number as a float (inf where it is too large for one); None if not a number."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer beyond float range, e.g. 10**400 written out
        return math.inf if value > 0 else -math.inf


def _checked_na_probs(na_probs, gold: dict, source: str | Path | None = None) -> dict[str, float]:
    where = f"{source}: " if source else ""
    if not isinstance(na_probs, dict):
        raise MetricsInputError(f"{where}no-answer probabilities must be a JSON object {{question id: number}}, "
                                f"not a {type(na_probs).__name__}")
    values = {q: _as_float(v) for q, v in na_probs.items()}
    problems = [
        ("are not numbers", lambda v: v is None),
        ("are NaN or infinite (or too large for a float)", lambda v: not math.isfinite(v)),
    ]
    for problem, is_bad in problems:
        bad = [q for q, v in values.items() if is_bad(v)]
        if bad:
            raise MetricsInputError(f"{where}no-answer probabilities for {len(bad)} questions {problem} ({_examples(bad)})")
    unknown = [q for q in na_probs if q not in gold]
    if unknown:
        raise MetricsInputError(f"{where}no-answer probabilities for {len(unknown)} question ids that are not in the data ({_examples(unknown)})")
    missing = [q for q in gold if q not in na_probs]
    if missing:
        raise MetricsInputError(f"{where}no-answer probabilities missing for {len(missing)} of {len(gold)} questions ({_examples(missing)})")
    # e.g. Hugging Face's null-odds files hold score differences, negative ones too: the official
    # script only compares and sorts them, so they are scored as it scores them
    outside = sum(not 0 <= v <= 1 for v in values.values())
    if outside:
        where = f" ({source})" if source else ""
        print(f"warning: {outside} of {len(na_probs)} no-answer probabilities are outside [0, 1]{where}; "
              "used as unnormalised scores, as the official script does", file=sys.stderr)
    return values  # file order: it breaks ties in best-threshold search


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
             na_prob_thresh: float = NA_PROB_THRESH, *, na_prob_file: str | Path | None = None) -> dict:
    """The official SQuAD 2.0 numbers: exact, f1, total, HasAns_*/NoAns_* (where that category
    has questions) and, given na_probs, best_exact/best_f1 with their thresholds. Without
    na_probs every probability counts as 0, as in the official script. na_prob_file: named in
    the refusals of bad probabilities."""
    return _evaluate(gold_answers(dataset), preds, na_probs, na_prob_thresh, na_prob_file)


def _evaluate(gold: dict[str, list[str]], preds: dict, na_probs, na_prob_thresh: float = NA_PROB_THRESH,
              na_prob_file=None) -> dict:
    _check_predictions(preds, gold)
    probs = dict.fromkeys(gold, 0.0) if na_probs is None else _checked_na_probs(na_probs, gold, na_prob_file)
    exact_raw, f1_raw = {}, {}
    for qid, answers in gold.items():
        golds = [g for g in map(normalize_answer, answers) if g] or [""]  # unanswerable: only "" is right
        pred = normalize_answer(preds[qid])  # once, however many golds (a prediction may be megabytes)
        pred_tokens = pred.split()
        pred_counts = Counter(pred_tokens)
        exact_raw[qid] = max(int(pred == g) for g in golds)
        f1_raw[qid] = max(_overlap_f1(pred_counts, len(pred_tokens), g.split()) for g in golds)
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


def score(dataset, preds: dict[str, str], na_probs: dict[str, float] | None = None, *,
          na_prob_file: str | Path | None = None) -> dict:
    """What `python -m metrics.squad` prints: {"squad_v2": evaluate(...), "bleu", "rouge",
    "meteor", "n_answerable_scored"}; the text metrics are over the answerable questions only,
    each prediction against all its gold answers. A text metric is None if there are no answerable
    questions, or if it refuses this data (e.g. BLEU where every gold answer is blank): a warning
    on stderr says why, and the official numbers stand."""
    gold = gold_answers(dataset)  # read once: one warning, if any
    result = {"squad_v2": _evaluate(gold, preds, na_probs, NA_PROB_THRESH, na_prob_file)}
    answerable = {qid: answers for qid, answers in gold.items() if answers}
    predictions, references = [preds[q] for q in answerable], list(answerable.values())
    for name, metric in (("bleu", bleu), ("rouge", rouge), ("meteor", meteor)):
        try:
            result[name] = metric(predictions, references) if answerable else None
        except MetricsInputError as e:  # WordNetMissing is no property of the data: it still fails
            print(f"warning: {name} reported as null: {e}", file=sys.stderr)
            result[name] = None
    result["n_answerable_scored"] = len(answerable)
    return result


# --- command line

def _default_data() -> Path:
    try:
        return fetch_file("squad_v2_dev")
    except DataUnavailable as e:
        raise MetricsInputError(str(e)) from None


def _non_finite(value, where: str = "") -> list[str]:
    """Paths of the NaN/infinite numbers in a result, for the refusal message."""
    if isinstance(value, float) and not math.isfinite(value):
        return [where or "(the result)"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{where}[{i}]")]
    return []


def format_scores(result: dict) -> str:
    """The CLI's JSON text of score()'s result, for scripts that print the same. Strict JSON:
    a NaN or infinite number is refused (MetricsInputError naming it), never written as NaN or
    Infinity, which JSON does not have."""
    bad = _non_finite(result)
    if bad:
        raise MetricsInputError(f"scores are not finite numbers at {', '.join(bad)}; refusing to write "
                                "NaN/Infinity, which is not JSON")
    return json.dumps(result, indent=1, allow_nan=False)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # links and other spellings of one file too
    except OSError:  # one does not exist (yet): where the paths lead
        return a.resolve() == b.resolve()


def _check_out(out: Path, inputs: dict[str, Path | None]) -> None:
    """Refuses an --out that is one of the inputs, before the scores overwrite it."""
    for what, path in inputs.items():
        if path is not None and _same_file(out, path):
            raise MetricsInputError(f"--out {out} is the {what} {path}: the scores would overwrite it; "
                                    "pass another --out path")


def main(argv: list[str] | None = None) -> int:
    parser = CliParser(prog="python -m metrics.squad", description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", type=Path, help='JSON {question id: answer text}, "" for no answer')
    parser.add_argument("--data", type=Path, help="SQuAD-format JSON (default: the SQuAD 2.0 dev set, fetched)")
    parser.add_argument("--na-prob-file", type=Path, help="JSON {question id: no-answer probability}")
    parser.add_argument("--out", type=Path, help="also write the scores to this file, not one of the inputs "
                        "(atomically; if that fails, the scores are still printed, then the error, exit 2)")
    args = parser.parse_args(argv)
    try:
        data = args.data or _default_data()
        if args.out:
            _check_out(args.out, {"predictions file": args.predictions, "--data file": data,
                                  "--na-prob-file": args.na_prob_file})
        dataset = load_dataset(data)
        preds = read_json(args.predictions, "predictions file")
        na_probs = read_json(args.na_prob_file, "no-answer probability file") if args.na_prob_file else None
        text = format_scores(score(dataset, preds, na_probs, na_prob_file=args.na_prob_file))
    except (MetricsInputError, WordNetMissing) as e:
        if isinstance(e, MissingPredictions):
            print(json.dumps({"error": "missing predictions", "n_missing": e.n_missing}))
        print("error: " + " ".join(str(e).splitlines()), file=sys.stderr)
        return 2
    print(text, flush=True)  # the scores are not lost when --out cannot be written
    if args.out:
        try:
            write_atomic(args.out, text + "\n")
        except OSError as e:
            print(f"error: cannot write {args.out}: {e.strerror or e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
