"""metrics.rouge: rouge_score's tokenizer and ROUGE-1/2/L/Lsum on hand-computed cases, and the fast
paths for long predictions against the plain dynamic programme."""
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from metrics import MetricsInputError
import metrics.rouge as rouge_module
from metrics.rouge import rouge, rouge_scores, tokenize

texts = st.text(alphabet="abc xy\n.-", max_size=25)


def test_tokenize():
    assert tokenize("Hello, World! It's 3.14") == ["hello", "world", "it", "s", "3", "14"]
    assert tokenize("naïve café") == ["na", "ve", "caf"]  # only [a-z0-9] make tokens
    assert tokenize("running") == ["running"]  # no stemming


def test_hand_computed():
    scores = rouge_scores("the cat sat on the mat", "the cat was on the mat")
    assert scores["rouge1"] == pytest.approx(5 / 6)
    assert scores["rouge2"] == pytest.approx(3 / 5)  # the cat, on the, the mat
    assert scores["rougeL"] == pytest.approx(5 / 6)  # the cat on the mat
    # LCS is "the gunman" (2 of 4 tokens each side) though every word overlaps
    scores = rouge_scores("the gunman killed police", "police killed the gunman")
    assert (scores["rouge1"], scores["rougeL"]) == (1.0, 0.5)
    # unequal lengths: P = 2/3, R = 2/5
    assert rouge_scores("x b d", "a b c d e")["rougeL"] == pytest.approx(2 * (2 / 3) * (2 / 5) / (2 / 3 + 2 / 5))


def test_rouge_lsum_unions_lcs_over_sentences():
    # Lin (2004)'s example: union LCS of r with c1, c2 is w1 w2 w3 w5: R = 4/5, P = 4/10
    scores = rouge_scores("w1 w2 w6 w7 w8\nw1 w3 w8 w9 w5", "w1 w2 w3 w4 w5")
    assert scores["rougeLsum"] == pytest.approx(2 * 0.4 * 0.8 / 1.2)
    # sentences in swapped order: each matches whole, where the flat LCS finds half
    scores = rouge_scores("c d\na b", "a b\nc d")
    assert (scores["rougeL"], scores["rougeLsum"]) == (0.5, 1.0)


def test_best_reference_then_mean():
    result = rouge(["a b", "x"], [["a", "a b"], "y"])
    assert result == {"rouge1": 0.5, "rouge2": 0.5, "rougeL": 0.5, "rougeLsum": 0.5}
    assert rouge([""], ["a"]) == dict.fromkeys(["rouge1", "rouge2", "rougeL", "rougeLsum"], 0.0)


def test_refusals():
    with pytest.raises(MetricsInputError):
        rouge(["a"], [])
    with pytest.raises(MetricsInputError, match="list of strings"):
        rouge("a", ["a"])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(texts, st.lists(texts, min_size=1, max_size=3)), min_size=1, max_size=6), st.randoms())
def test_properties(items, rnd):
    predictions, references = map(list, zip(*items))
    result = rouge(predictions, references)
    assert all(0.0 <= v <= 1.0 for v in result.values())
    order = list(range(len(items)))
    rnd.shuffle(order)
    assert rouge([predictions[i] for i in order], [references[i] for i in order]) == pytest.approx(result, abs=1e-12)
    for refs in references:  # predicting a reference is perfect, rouge2 given two tokens
        scores = rouge([refs[0]], [refs])
        n = len(tokenize(refs[0]))
        assert scores == {"rouge1": float(n > 0), "rouge2": float(n > 1), "rougeL": float(n > 0), "rougeLsum": float(n > 0)}


# --- long predictions: the fast paths give the plain dynamic programme's numbers -----------------



def plain_lcs_table(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
    return table


def plain_positions(ref, pred):
    """rouge_score's backtracking over the full table: ties step back in ref."""
    table, i, j, out = plain_lcs_table(ref, pred), len(ref), len(pred), set()
    while i > 0 and j > 0:
        if ref[i - 1] == pred[j - 1]:
            out.add(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return out


def plain_rouge(prediction: str, reference: str) -> dict[str, float]:
    def f(p, r):
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    def n_gram(ref, pred, n):
        rc = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        pc = Counter(tuple(pred[i:i + n]) for i in range(len(pred) - n + 1))
        overlap = sum((rc & pc).values())
        return f(overlap / max(pc.total(), 1), overlap / max(rc.total(), 1))

    pred, ref = tokenize(prediction), tokenize(reference)
    lcs = plain_lcs_table(ref, pred)[-1][-1] if ref and pred else 0
    ref_sents = [tokenize(s) for s in reference.split("\n") if s]
    pred_sents = [tokenize(s) for s in prediction.split("\n") if s]
    ref_left, pred_left, hits = Counter(ref), Counter(pred), 0
    for sent in ref_sents:
        union = set().union(*(plain_positions(sent, p) for p in pred_sents))
        for token in (sent[i] for i in sorted(union)):
            if ref_left[token] > 0 and pred_left[token] > 0:
                hits += 1
                ref_left[token] -= 1
                pred_left[token] -= 1
    return {"rouge1": n_gram(ref, pred, 1), "rouge2": n_gram(ref, pred, 2),
            "rougeL": f(lcs / len(pred), lcs / len(ref)) if lcs else 0.0,
            "rougeLsum": f(hits / len(pred), hits / len(ref)) if pred and ref else 0.0}


wide = st.text(alphabet="abcxy z\n\n,", max_size=60)


@pytest.mark.parametrize("numpy_cells", [0, 20_000])  # every table by numpy, or only large ones
@settings(max_examples=150, deadline=None)
@given(wide, wide)
def test_same_numbers_as_the_plain_dynamic_programme(numpy_cells, prediction, reference):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rouge_module, "_NUMPY_CELLS", numpy_cells)
        assert rouge_scores(prediction, reference) == plain_rouge(prediction, reference)


def test_long_prediction_same_numbers_as_the_plain_dynamic_programme():
    """Long sentences squeezed and backtracked by numpy, thousands of repeated sentences."""
    prediction = ("the cat sat on a mat by the door " * 300 + "\n" + "cat\nmat door\n" * 500
                  + "x y z " * 400 + "door the on sat cat")
    reference = "the cat sat on the mat\nby the door the cat sat"
    assert rouge_scores(prediction, reference) == pytest.approx(plain_rouge(prediction, reference), abs=0, rel=0)
