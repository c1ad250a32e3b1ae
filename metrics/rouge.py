"""ROUGE as the rouge_score package computes it without stemming: rouge1, rouge2, rougeL
(longest common subsequence) and rougeLsum (union LCS over newline-separated sentences),
each the best F-measure over an item's references, then the plain mean over items."""
import re
from collections import Counter

from metrics import reference_lists

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def tokenize(text: str) -> list[str]:
    """rouge_score's default tokenizer: lowercase, anything but [a-z0-9] separates tokens."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _fmeasure(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _rouge_n(ref: list[str], pred: list[str], n: int) -> float:
    ref_ngrams = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
    pred_ngrams = Counter(tuple(pred[i:i + n]) for i in range(len(pred) - n + 1))
    overlap = sum((ref_ngrams & pred_ngrams).values())
    return _fmeasure(overlap / max(pred_ngrams.total(), 1), overlap / max(ref_ngrams.total(), 1))


def _lcs_table(a: list[str], b: list[str]) -> list[list[int]]:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
    return table


def _rouge_l(ref: list[str], pred: list[str]) -> float:
    if not ref or not pred:
        return 0.0
    lcs = _lcs_table(ref, pred)[-1][-1]
    return _fmeasure(lcs / len(pred), lcs / len(ref))


def _lcs_positions(ref: list[str], pred: list[str]) -> set[int]:
    """Positions in ref of one LCS, backtracked as rouge_score does (ties step back in ref):
    with several sentences the union of these choices decides the score."""
    table, i, j, positions = _lcs_table(ref, pred), len(ref), len(pred), set()
    while i > 0 and j > 0:
        if ref[i - 1] == pred[j - 1]:
            positions.add(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return positions


def _rouge_lsum(ref_sents: list[list[str]], pred_sents: list[list[str]]) -> float:
    n_ref, n_pred = sum(map(len, ref_sents)), sum(map(len, pred_sents))
    if not n_ref or not n_pred:
        return 0.0
    # each token counts as a hit at most as often as it occurs on both sides
    ref_left = Counter(t for s in ref_sents for t in s)
    pred_left = Counter(t for s in pred_sents for t in s)
    hits = 0
    for sent in ref_sents:
        union = set().union(*(_lcs_positions(sent, p) for p in pred_sents))
        for token in (sent[i] for i in sorted(union)):
            if ref_left[token] > 0 and pred_left[token] > 0:
                hits += 1
                ref_left[token] -= 1
                pred_left[token] -= 1
    return _fmeasure(hits / n_pred, hits / n_ref)


def _sentences(text: str) -> list[list[str]]:
    return [tokenize(s) for s in text.split("\n") if s]


def rouge_scores(prediction: str, reference: str) -> dict[str, float]:
    """F-measures of one prediction against one reference."""
    pred, ref = tokenize(prediction), tokenize(reference)
    return {
        "rouge1": _rouge_n(ref, pred, 1),
        "rouge2": _rouge_n(ref, pred, 2),
        "rougeL": _rouge_l(ref, pred),
        "rougeLsum": _rouge_lsum(_sentences(reference), _sentences(prediction)),
    }


def rouge(predictions: list[str], references: list) -> dict[str, float]:
    """Mean over items of the best F-measure against references[i] (a string or a list)."""
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, refs in zip(predictions, reference_lists(predictions, references)):
        per_ref = [rouge_scores(prediction, r) for r in refs]
        for key in ROUGE_TYPES:
            totals[key] += max(s[key] for s in per_ref)
    return {key: total / len(predictions) for key, total in totals.items()}
