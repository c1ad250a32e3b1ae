"""metrics.bleu: the 13a tokenizer and corpus BLEU over its characters, on hand-made cases."""
import math

import pytest
from hypothesis import given, settings, strategies as st

from metrics import MetricsInputError
from metrics.bleu import bleu, tokenize_13a

texts = st.text(alphabet="abcxyz019 .,-&;'()", max_size=30)
# 4+ characters besides spaces: 13a only adds spaces here (no "&amp;" etc. can form)
long_texts = st.builds(str.__add__, st.text(alphabet="abcxyz019.,-&;'()", min_size=4, max_size=8), texts)


@pytest.mark.parametrize("text, tokens", [
    ("Hello, world.", "Hello , world ."),
    ("It costs 3.14 or 1,000 (US$)", "It costs 3.14 or 1,000 ( US $ )"),
    ("1-2 well-known", "1 - 2 well-known"),
    ("a &amp; b &lt;c&gt; &quot;q&quot;", 'a & b < c > " q "'),
    ("end.\nNext-\nline<skipped>", "end . Nextline"),
    ("  spaced   out  ", "spaced out"),
])
def test_tokenize_13a(text, tokens):
    assert tokenize_13a(text) == tokens


def test_identical_is_one():
    result = bleu(["the cat sat", "on the mat"], [["the cat sat"], "on the mat"])
    assert result == {"bleu": 1.0, "precisions": [1.0] * 4, "brevity_penalty": 1.0, "length_ratio": 1.0,
                      "translation_length": 21, "reference_length": 21}


def test_no_four_gram_match_is_zero_without_smoothing():
    result = bleu(["abc abd"], [["abd abc"]])  # every character 4-gram differs
    assert result["precisions"][0] == 1.0 and result["precisions"][3] == 0.0 and result["bleu"] == 0.0
    assert bleu(["abc"], ["abc"])["bleu"] == 0.0  # shorter than 4 characters: no 4-grams at all


def test_counts_clip_at_the_max_over_references():
    precisions = bleu(["aaaaaaaa"], [["aa", "aaa"]])["precisions"]
    assert precisions == [3 / 8, 2 / 7, 1 / 6, 0.0]


def test_brevity_penalty_uses_the_shortest_reference():
    result = bleu(["abcd"], [["abcdefgh", "abcdef"]])
    assert result["reference_length"] == 6 and result["length_ratio"] == 4 / 6
    assert result["bleu"] == pytest.approx(math.exp(1 - 6 / 4))


def test_corpus_counts_not_mean_of_sentences():
    # one perfect item and one empty prediction: counts pool, only the lengths change
    result = bleu(["abcdef", ""], [["abcdef"], ["zzzzzz"]])
    assert result["precisions"] == [1.0] * 4 and result["translation_length"] == 6 and result["reference_length"] == 12
    assert result["bleu"] == pytest.approx(math.exp(1 - 2))
    assert bleu([""], ["abc"])["brevity_penalty"] == 0.0


def test_refusals():
    with pytest.raises(MetricsInputError, match="2 predictions but 1 reference lists"):
        bleu(["a", "b"], [["a"]])
    with pytest.raises(MetricsInputError, match="nothing to score"):
        bleu([], [])
    with pytest.raises(MetricsInputError, match="non-empty list"):
        bleu(["a"], [[]])
    with pytest.raises(MetricsInputError, match="every reference is empty"):
        bleu(["a"], [" "])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(texts, st.lists(long_texts, min_size=1, max_size=3)), min_size=1, max_size=6), st.randoms())
def test_properties(items, rnd):
    predictions, references = map(list, zip(*items))
    result = bleu(predictions, references)
    assert 0.0 <= result["bleu"] <= 1.0 and all(0.0 <= p <= 1.0 for p in result["precisions"])
    order = list(range(len(items)))
    rnd.shuffle(order)
    assert bleu([predictions[i] for i in order], [references[i] for i in order]) == result
    # predicting one of the references is perfect
    assert bleu([refs[0] for refs in references], references)["bleu"] == 1.0
