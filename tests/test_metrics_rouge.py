"""metrics.rouge: rouge_score's tokenizer and ROUGE-1/2/L/Lsum on hand-computed cases."""
import pytest
from hypothesis import given, settings, strategies as st

from metrics import MetricsInputError
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
