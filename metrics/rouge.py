"""ROUGE as the rouge_score package computes it without stemming: rouge1, rouge2, rougeL
(longest common subsequence) and rougeLsum (union LCS over newline-separated sentences),
each the best F-measure over an item's references, then the plain mean over items.

Long predictions (a runaway generation of megabytes against a few-word answer) cost about linear
time: each prediction is tokenised once for all its references; n-gram overlaps count only the
prediction's n-grams that the reference has; the LCS tables skip what cannot be in a common
subsequence (see _squeezed_ids) and run row by row in numpy when they are large. The numbers are those of
the plain dynamic programme, including which LCS rougeLsum's backtracking picks."""
import re
from collections import Counter
from itertools import chain, islice, repeat

import numpy as np

from metrics import reference_lists

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_NUMPY_CELLS = 20_000  # LCS tables above this many cells are filled by numpy, row by row


def tokenize(text: str) -> list[str]:
    """rouge_score's default tokenizer: lowercase, anything but [a-z0-9] separates tokens."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _fmeasure(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _ngrams(tokens: list[str], n: int):
    return zip(*(islice(tokens, k, None) for k in range(n)))


def _rouge_n(ref: list[str], pred: "_Prediction", n: int) -> float:
    ref_ngrams = Counter(_ngrams(ref, n))
    pred_ngrams = pred.ngram_counts(n)
    overlap = sum(min(count, pred_ngrams[g]) for g, count in ref_ngrams.items() if g in pred_ngrams)
    return _fmeasure(overlap / max(len(pred.tokens) - n + 1, 1), overlap / max(ref_ngrams.total(), 1))


def _squeezed_ids(ids: dict[str, int], pred) -> tuple[int, ...] | np.ndarray:
    """pred as ref token ids (0 for a token that is not in ref), every maximal run of 0s cut to one.
    The LCS table of (ref, squeezed) is that of (ref, pred) with runs of identical columns merged:
    a column that matches nothing repeats its left neighbour, and the backtracking crosses a run of
    them exactly as it crosses one (where it steps up instead, it does so on the first). So LCS
    length and backtracked positions are unchanged. Long sentences are squeezed by numpy."""
    if len(pred) < 256:
        out, gap = [], False
        for token in pred:
            n = ids.get(token, 0)
            if n or not gap:
                out.append(n)
            gap = not n
        return tuple(out)
    arr = np.fromiter(map(ids.get, pred, repeat(0)), dtype=np.int32, count=len(pred))
    keep = arr != 0
    keep[0] = True
    keep[1:] |= arr[:-1] != 0  # a 0 stays where it starts a run
    return arr[keep]


def _token_ids(ref: list[str], pred) -> tuple[list[int], np.ndarray]:
    """ref and pred as small ints, 0 for pred tokens not in ref."""
    ids = {token: n for n, token in enumerate(dict.fromkeys(ref), 1)}
    return [ids[t] for t in ref], np.fromiter(map(ids.get, pred, repeat(0)), dtype=np.int32, count=len(pred))


def _lcs_rows(ref_ids: list[int], pred_ids: np.ndarray, keep: bool = True) -> np.ndarray:
    """The LCS table (len(ref)+1 rows, len(pred)+1 columns; only the last row unless keep) by numpy,
    row by row: t[i][j] = max over k <= j of (t[i-1][k-1] + 1 if ref[i-1] == pred[k-1] else t[i-1][k])
    (on a match t[i-1][k-1] + 1 is the largest candidate, so this is the usual recurrence)."""
    dtype = np.uint8 if len(ref_ids) < 255 else np.int32
    table = np.zeros((len(ref_ids) + 1 if keep else 2, len(pred_ids) + 1), dtype=dtype)
    for i, token in enumerate(ref_ids, 1):
        above, row = (table[i - 1], table[i]) if keep else (table[(i - 1) % 2], table[i % 2])
        step = np.where(pred_ids == token, above[:-1] + 1, above[1:])
        np.maximum.accumulate(step, out=row[1:])
    return table if keep else table[len(ref_ids) % 2][None]


def _lcs_length(ref: list[str], pred: list[str]) -> int:
    if not ref or not pred:
        return 0
    vocab = set(ref)
    pred = [token for token in pred if token in vocab]  # nothing else can be in a common subsequence
    if len(ref) * len(pred) > _NUMPY_CELLS:
        return int(_lcs_rows(*_token_ids(ref, pred), keep=False)[-1, -1])
    row = [0] * (len(pred) + 1)
    for x in ref:
        diagonal, row = row, [0]
        for j, y in enumerate(pred, 1):
            row.append(diagonal[j - 1] + 1 if x == y else max(diagonal[j], row[j - 1]))
    return row[-1]


def _rouge_l(ref: list[str], pred: list[str]) -> float:
    if not ref or not pred:
        return 0.0
    lcs = _lcs_length(ref, pred)
    return _fmeasure(lcs / len(pred), lcs / len(ref))


def _lcs_positions(ref: list[int], pred) -> set[int]:
    """Positions in ref of one LCS, backtracked as rouge_score does (ties step back in ref):
    with several sentences the union of these choices decides the score. ref and pred: token ids."""
    if len(ref) * len(pred) > _NUMPY_CELLS:
        return _lcs_positions_numpy(ref, np.asarray(pred, dtype=np.int32))
    i, j, positions = len(ref), len(pred), set()
    table = [[0] * (len(pred) + 1) for _ in range(len(ref) + 1)]
    for a, x in enumerate(ref, 1):
        for b, y in enumerate(pred, 1):
            table[a][b] = table[a - 1][b - 1] + 1 if x == y else max(table[a - 1][b], table[a][b - 1])
    while i > 0 and j > 0:
        if ref[i - 1] == pred[j - 1]:
            positions.add(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return positions


def _lcs_positions_numpy(ref_ids: list[int], pred_ids: np.ndarray) -> set[int]:
    """_lcs_positions on a numpy table; each run of steps back in pred is one vectorised search."""
    table = _lcs_rows(ref_ids, pred_ids)
    i, j, positions = len(ref_ids), len(pred_ids), set()
    while i > 0 and j > 0:
        # the step at column c (1 <= c <= j) goes back in pred unless pred[c-1] matches ref[i-1]
        # or t[i][c-1] <= t[i-1][c]: find the last column where it does not
        width = 1024
        while True:
            lo = max(j - width, 0)
            halt = (pred_ids[lo:j] == ref_ids[i - 1]) | (table[i, lo:j] <= table[i - 1, lo + 1:j + 1])
            hits = np.flatnonzero(halt)
            if hits.size or lo == 0:
                j = lo + int(hits[-1]) + 1 if hits.size else 0
                break
            width *= 4
        if j == 0:
            break
        if pred_ids[j - 1] == ref_ids[i - 1]:
            positions.add(i - 1)
            i, j = i - 1, j - 1
        else:
            i -= 1
    return positions


def _rouge_lsum(ref_sents: list[list[str]], pred: "_Prediction") -> float:
    n_ref, n_pred = sum(map(len, ref_sents)), len(pred.tokens)
    if not n_ref or not n_pred:
        return 0.0
    # each token counts as a hit at most as often as it occurs on both sides
    ref_left = Counter(t for s in ref_sents for t in s)
    pred_left = Counter({t: pred.counts[t] for t in ref_left if t in pred.counts})
    hits = 0
    for sent in ref_sents:
        ids = {token: n for n, token in enumerate(dict.fromkeys(sent), 1)}
        sent_ids = [ids[t] for t in sent]
        union, done = set(), set()
        for pred_sent in pred.distinct_sentences:  # the union of positions ignores order and repeats
            if len(union) == len(sent):
                break  # every position is in already
            if ids.keys().isdisjoint(pred_sent):
                continue  # no common token: an empty LCS
            squeezed = _squeezed_ids(ids, pred_sent)
            key = squeezed if isinstance(squeezed, tuple) else tuple(squeezed.tolist())
            if key not in done:  # the same squeezed sentence backtracks the same way
                done.add(key)
                union |= _lcs_positions(sent_ids, squeezed)
        for token in (sent[i] for i in sorted(union)):
            if ref_left[token] > 0 and pred_left[token] > 0:
                hits += 1
                ref_left[token] -= 1
                pred_left[token] -= 1
    return _fmeasure(hits / n_pred, hits / n_ref)


def _sentences(text: str) -> list[list[str]]:
    """Newline-separated sentences, each tokenised; an empty line is no sentence (a line of
    punctuation is an empty one). One pass over the text however many lines it has."""
    return [line.split() for line in re.sub(r"[^a-z0-9\n]+", " ", text.lower()).split("\n") if line]


class _Prediction:
    """A prediction tokenised once for all its references (whose n-grams are `wanted`)."""

    def __init__(self, text: str, references: list[str]):
        sentences = _sentences(text)
        self.tokens = list(chain.from_iterable(sentences))  # == tokenize(text): newlines separate too
        self.counts = Counter(self.tokens)
        self.distinct_sentences = [s for s in dict.fromkeys(map(tuple, sentences)) if s]
        self._wanted = [tokenize(r) for r in references]
        self._ngrams: dict[int, Counter] = {}

    def ngram_counts(self, n: int) -> Counter:
        """Counts of the prediction's n-grams that some reference has: only those can overlap,
        and a long prediction then costs one pass, not a Counter of all its n-grams."""
        if n not in self._ngrams:
            wanted = {g for ref in self._wanted for g in _ngrams(ref, n)}
            self._ngrams[n] = Counter(filter(wanted.__contains__, _ngrams(self.tokens, n)))
        return self._ngrams[n]


def _scores(pred: _Prediction, reference: str) -> dict[str, float]:
    ref = tokenize(reference)
    return {
        "rouge1": _rouge_n(ref, pred, 1),
        "rouge2": _rouge_n(ref, pred, 2),
        "rougeL": _rouge_l(ref, pred.tokens),
        "rougeLsum": _rouge_lsum(_sentences(reference), pred),
    }


def rouge_scores(prediction: str, reference: str) -> dict[str, float]:
    """F-measures of one prediction against one reference."""
    return _scores(_Prediction(prediction, [reference]), reference)


def rouge(predictions: list[str], references: list) -> dict[str, float]:
    """Mean over items of the best F-measure against references[i] (a string or a list)."""
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, refs in zip(predictions, reference_lists(predictions, references)):
        pred = _Prediction(prediction, refs)
        per_ref = [_scores(pred, r) for r in refs]
        for key in ROUGE_TYPES:
            totals[key] += max(s[key] for s in per_ref)
    return {key: total / len(predictions) for key, total in totals.items()}
