"""metrics.bleu: the 13a tokenizer and word-level corpus BLEU (evaluate's "bleu" semantics),
on hand-checked cases; the expected values are derived in the comments. Long predictions: the same
words and counts as the four 13a regexes and whole n-gram Counters."""
import math
import re
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from metrics import MetricsInputError
from metrics.bleu import bleu, tokenize_13a, words_13a

texts = st.text(alphabet="abcxyz019 .,-&;'()", max_size=30)
# 4+ space-separated chunks: 13a only adds spaces here (no "&amp;" etc. can form), so 4+ words
chunks = st.lists(st.text(alphabet="abcxyz019.,-&;'()", min_size=1, max_size=5), min_size=4, max_size=8)
long_texts = st.builds(lambda words, tail: " ".join(words) + " " + tail, chunks, texts)


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
    assert words_13a(text) == tokens.split()


def test_identical_is_one():
    # 6 + 5 words, every n-gram matches, lengths equal: BLEU 1, lengths in words
    result = bleu(["the cat sat on the mat", "a dog ran home fast"], [["the cat sat on the mat"], "a dog ran home fast"])
    assert result == {"bleu": 1.0, "precisions": [1.0] * 4, "brevity_penalty": 1.0, "length_ratio": 1.0,
                      "translation_length": 11, "reference_length": 11}


def test_punctuation_becomes_separate_words():
    # "It cost $5 (US)." -> It cost $ 5 ( US ) . : 8 words, the same words as the pre-spaced
    # reference, so BLEU 1 (a plain whitespace split would give 4 words, none but "It"/"cost" matching)
    result = bleu(["It cost $5 (US)."], ["It cost $ 5 ( US ) ."])
    assert result["bleu"] == 1.0 and result["translation_length"] == result["reference_length"] == 8
    # "Paris, France." -> Paris , France . : 4 words
    assert bleu(["Paris, France."], ["Paris , France ."])["translation_length"] == 4
    # words are compared as they are: "The" is not "the" -> unigrams 1/2 ("cat" only)
    assert bleu(["The cat"], ["the cat"])["precisions"][0] == 1 / 2


def test_no_four_gram_match_is_zero_without_smoothing():
    # pred  the cat sat on the mat | ref  the mat sat on the cat
    # unigrams: the x2, cat, sat, on, mat all in the ref -> 6/6
    # bigrams: the cat, cat sat, sat on, on the, the mat vs ref's the mat, mat sat, sat on, on the,
    #   the cat -> the cat, sat on, on the, the mat match: 4/5
    # trigrams: the cat sat, cat sat on, sat on the, on the mat -> only "sat on the": 1/4
    # 4-grams: the cat sat on, cat sat on the, sat on the mat -> none: 0/3 -> BLEU 0
    result = bleu(["the cat sat on the mat"], ["the mat sat on the cat"])
    assert result["precisions"] == [1.0, 4 / 5, 1 / 4, 0.0] and result["bleu"] == 0.0
    # 3 words: no 4-grams are possible at all -> precision 0.0 -> BLEU 0 though all else matches
    assert bleu(["the cat sat"], ["the cat sat"])["precisions"] == [1.0, 1.0, 1.0, 0.0]
    assert bleu(["the cat sat"], ["the cat sat"])["bleu"] == 0.0


def test_counts_clip_at_the_max_over_references():
    # the classic: 7 x "the"; "the" occurs at most twice in one reference (the first), so 2/7
    # (a sum over references would allow 3); no bigram "the the" anywhere -> 0/6
    result = bleu(["the the the the the the the"], [["the cat is on the mat", "there is a cat on the mat"]])
    assert result["precisions"] == [2 / 7, 0.0, 0.0, 0.0] and result["bleu"] == 0.0
    # the max is per n-gram, over all references: "a a b b" vs "a a c" and "b b c":
    # unigrams a:2 (first ref), b:2 (second ref) -> 4/4; bigrams a a, a b, b b -> a a and b b: 2/3;
    # trigrams a a b, a b b -> 0/2; 4-gram a a b b -> 0/1
    result = bleu(["a a b b"], [["a a c", "b b c"]])
    assert result["precisions"] == [1.0, 2 / 3, 0.0, 0.0] and result["reference_length"] == 3


def test_brevity_penalty_uses_the_shortest_reference():
    # pred (4 words) is the start of both references (6 and 8 words): every precision 1 (4/4, 3/3,
    # 2/2, 1/1); reference_length = the shortest, 6; ratio 4/6; BP = exp(1 - 6/4) = exp(-0.5)
    result = bleu(["the cat sat on"], [["the cat sat on the mat", "the cat sat on a big red mat"]])
    assert result["precisions"] == [1.0] * 4
    assert result["translation_length"] == 4 and result["reference_length"] == 6 and result["length_ratio"] == 4 / 6
    assert result["brevity_penalty"] == pytest.approx(math.exp(-0.5)) and result["bleu"] == pytest.approx(math.exp(-0.5))
    # the shortest, not the closest: 6 words vs references of 4 and 7 -> reference_length 4,
    # ratio 6/4 > 1, BP 1 (the closest, 7, would give exp(1 - 7/6)).
    # pred  the cat sat on the mat | refs  the cat sat down / the cat sat on the red mat
    # unigrams 6/6 (the is clipped at 2 by the second ref); bigrams 4/5 (not "the mat");
    # trigrams 3/4 (not "on the mat"); 4-grams 2/3 (not "sat on the mat")
    # BLEU = (1 * 4/5 * 3/4 * 2/3) ** (1/4) = 0.4 ** 0.25
    result = bleu(["the cat sat on the mat"], [["the cat sat down", "the cat sat on the red mat"]])
    assert result["reference_length"] == 4 and result["length_ratio"] == 1.5 and result["brevity_penalty"] == 1.0
    assert result["precisions"] == [1.0, 4 / 5, 3 / 4, 2 / 3] and result["bleu"] == pytest.approx(0.4 ** 0.25)


def test_empty_prediction():
    # alone: 0 words -> no n-grams (precisions 0.0), ratio 0, BP 0 (evaluate divides by zero here)
    assert bleu([""], ["the cat"]) == {"bleu": 0.0, "precisions": [0.0] * 4, "brevity_penalty": 0.0,
                                       "length_ratio": 0.0, "translation_length": 0, "reference_length": 2}
    # among others it adds no n-grams, only its reference's length: 6 vs 6 + 2 words,
    # precisions stay 1, BP = exp(1 - 8/6) = exp(-1/3)
    result = bleu(["the cat sat on the mat", " "], ["the cat sat on the mat", "a dog"])
    assert result["precisions"] == [1.0] * 4 and result["translation_length"] == 6 and result["reference_length"] == 8
    assert result["bleu"] == pytest.approx(math.exp(-1 / 3))


def test_corpus_counts_not_mean_of_sentences():
    # item 1: the cat sat on the mat, exact: matches/possible 6/6, 5/5, 4/4, 3/3 (sentence BLEU 1)
    # item 2: a b c d vs a b c e: 3/4, 2/3, 1/2, 0/1 (sentence BLEU 0); the mean would be 0.5
    # pooled: 9/10, 7/8, 5/6, 3/4; 10 vs 10 words, BP 1; BLEU = (9/10 * 7/8 * 5/6 * 3/4) ** (1/4)
    #   = (63/128) ** (1/4) ~ 0.8376
    result = bleu(["the cat sat on the mat", "a b c d"], ["the cat sat on the mat", "a b c e"])
    assert result["precisions"] == [9 / 10, 7 / 8, 5 / 6, 3 / 4] and result["brevity_penalty"] == 1.0
    assert result["bleu"] == pytest.approx((63 / 128) ** 0.25)


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
    assert result["translation_length"] == sum(len(words_13a(p)) for p in predictions)
    assert result["reference_length"] == sum(min(len(words_13a(r)) for r in refs) for refs in references)
    order = list(range(len(items)))
    rnd.shuffle(order)
    assert bleu([predictions[i] for i in order], [references[i] for i in order]) == result
    # words, not characters: how much whitespace separates them does not matter
    assert bleu([p.replace(" ", " \t ") for p in predictions], references) == result
    # predicting one of the references (4+ words each) is perfect
    assert bleu([refs[0] for refs in references], references)["bleu"] == 1.0


# --- long predictions: the fast paths give the plain definition's numbers ------------------------

THE_13A_REGEXES = [  # mteval-v13a.pl's rules as four plain regex substitutions, applied in order
    (r"([\{-\~\[-\` -\&\(-\+\:-\@\/])", r" \1 "),
    (r"([^0-9])([\.,])", r"\1 \2 "),
    (r"([\.,])([^0-9])", r" \1 \2"),
    (r"([0-9])(-)", r"\1 \2 "),
]


def plain_13a(text: str) -> list[str]:
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    text = text.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    text = f" {text} "
    for pattern, replacement in THE_13A_REGEXES:
        text = re.sub(pattern, replacement, text)
    return text.split()


def plain_bleu(prediction: str, refs: list[str], max_order: int = 4) -> tuple[list[int], list[int]]:
    """(clipped matches, possible) per order by whole Counters of every n-gram."""
    def grams(words):
        return Counter(tuple(words[i:i + n]) for n in range(1, max_order + 1) for i in range(len(words) - n + 1))
    words = plain_13a(prediction)
    best = Counter()
    for r in refs:
        best |= grams(plain_13a(r))
    clipped = grams(words) & best
    return ([sum(c for g, c in clipped.items() if len(g) == n) for n in range(1, max_order + 1)],
            [max(len(words) - n + 1, 0) for n in range(1, max_order + 1)])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab1 .,.,--&;<x\n\t(é", max_size=60))
def test_13a_gives_the_words_of_the_four_regexes(text):
    """Periods and commas in runs (where the regexes' non-overlapping matches pad every other one),
    next to digits, dashes after digits, symbols: the same words."""
    assert words_13a(text) == plain_13a(text)


@pytest.mark.parametrize("prediction", [
    "The cat sat. " * 3000,  # ~40 KB of repetition
    "." * 20_001 + "1,2,3" * 2000 + "a.b,c" * 2000,  # runs of periods and commas, no spaces
    " ".join(f"w{i % 997} the cat" for i in range(8000)),  # many distinct words
])
def test_long_prediction_counts_as_the_plain_definition(prediction):
    refs = ["the cat sat.", "a cat sat on the mat", ". . ."]
    matches, possible = plain_bleu(prediction, refs)
    result = bleu([prediction], [refs])
    assert result["translation_length"] == possible[0]
    assert result["precisions"] == [m / p if p else 0.0 for m, p in zip(matches, possible)]
