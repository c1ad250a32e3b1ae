"""Corpus BLEU with the semantics of Hugging Face evaluate's "bleu" (the project's reference
numbers, metric-cases): each text goes through the 13a tokenizer's rules (mteval-v13a.pl, as in
sacrebleu) and is then split on whitespace into WORD tokens, as evaluate's copy of the 13a
tokenizer does. N-grams of orders 1..max_order (default 4) are over those words, and
translation_length / reference_length count words. Corpus BLEU: the clipped n-gram matches and
the possible n-grams are summed over all items before the precisions are taken (not a mean of
sentence scores); each item's counts are clipped by the max count of that n-gram over its
references, and its reference length is its SHORTEST reference's. No smoothing.

Edge cases: an order with no possible n-grams in the whole corpus (every prediction shorter than
that order) has precision 0.0, and any precision 0.0 makes BLEU 0.0, as in evaluate. Where
evaluate would divide by zero: every prediction empty gives length_ratio 0.0, brevity_penalty 0.0
and BLEU 0.0; every reference empty (after tokenisation) is refused with MetricsInputError."""
import math
import re
from collections import Counter
from itertools import islice

from metrics import MetricsInputError, reference_lists

# The 13a tokenizer's rules (mteval-v13a.pl), applied in order to " text ":
#   1. ([\{-\~\[-\` -\&\(-\+\:-\@\/])  ->  " \1 "    punctuation and symbols
#   2. ([^0-9])([\.,])                 ->  "\1 \2 "   period and comma unless after a digit
#   3. ([\.,])([^0-9])                 ->  " \1 \2"   period and comma unless before a digit
#   4. ([0-9])(-)                      ->  "\1 \2 "   dash after a digit
# Each rule is applied here as an equivalent C-speed operation, so that a long run of punctuation
# costs no Python call per match (re.sub with a group-reference template does, before Python 3.12):
# the words are identical (tests/test_metrics_bleu.py checks it against the four regexes).
_RULE1 = re.compile(r"[\{-\~\[-\` -\&\(-\+\:-\@\/]")
_PAD_SYMBOLS = str.maketrans({chr(c): f" {chr(c)} " for c in range(128) if _RULE1.fullmatch(chr(c))})
_LONE_PERIOD = re.compile(r"(?<![0-9.,])\.(?![.,])")  # rule 2 where no period/comma is next to it
_LONE_COMMA = re.compile(r"(?<![0-9.,]),(?![.,])")
_RUN = re.compile(r"[.,]{2,}")  # rule 2 within runs of periods and commas
_PERIOD_BEFORE = re.compile(r"\.(?=[^0-9])")  # rule 3 (after rule 2 no period/comma touches another)
_COMMA_BEFORE = re.compile(r",(?=[^0-9])")
_DASH_AFTER_DIGIT = re.compile(r"(?<=[0-9])-")  # rule 4


def _rule2_in_run(match: re.Match) -> str:
    """Rule 2 on a run of periods and commas: its matches take the character before each one they
    pad, so they pad every other character, starting with the first unless a digit precedes the run;
    each padded character gets a space on both sides."""
    run = match.group()
    first = 1 if match.string[match.start() - 1] in "0123456789" else 0
    padded = "".join(f" {a} {b}" for a, b in zip(run[first::2], run[first + 1::2]))
    tail = f" {run[-1]} " if (len(run) - first) % 2 else ""
    return run[:first] + padded + tail


def tokenize_13a(text: str) -> str:
    """The 13a-tokenised line, its tokens joined by single spaces; .split() gives the words."""
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in text:
        text = text.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    text = f" {text} ".translate(_PAD_SYMBOLS)  # rule 1; the rules look at the characters around each symbol
    text = _LONE_COMMA.sub(" , ", _LONE_PERIOD.sub(" . ", text))
    text = _RUN.sub(_rule2_in_run, text)
    text = _COMMA_BEFORE.sub(" , ", _PERIOD_BEFORE.sub(" . ", text))
    text = _DASH_AFTER_DIGIT.sub(" - ", text)
    return " ".join(text.split())


def words_13a(text: str) -> list[str]:
    """The word tokens BLEU counts: the 13a-tokenised line split on whitespace."""
    return tokenize_13a(text).split()


def ngram_counts(words: list[str], max_order: int) -> Counter:
    """How often each n-gram (a tuple of words) of orders 1..max_order occurs."""
    return Counter(tuple(words[i:i + n]) for n in range(1, max_order + 1) for i in range(len(words) - n + 1))


def bleu(predictions: list[str], references: list, max_order: int = 4) -> dict:
    """Corpus BLEU of predictions[i] against references[i] (a string or a list of strings),
    with evaluate's keys; see the module docstring for the semantics and edge cases."""
    matches, possible = [0] * max_order, [0] * max_order
    translation_length = reference_length = 0
    for prediction, refs in zip(predictions, reference_lists(predictions, references)):
        words = words_13a(prediction)
        ref_words = [words_13a(r) for r in refs]
        translation_length += len(words)
        reference_length += min(map(len, ref_words))
        max_ref_counts = Counter()
        for r in ref_words:
            max_ref_counts |= ngram_counts(r, max_order)  # | keeps the max count of each n-gram
        for n in range(1, max_order + 1):
            # only the prediction's n-grams that a reference has can match: count just those, so a
            # long prediction costs one pass per order instead of a Counter of all its n-grams
            wanted = {g for g in max_ref_counts if len(g) == n}
            if wanted:
                counts = Counter(filter(wanted.__contains__, zip(*(islice(words, k, None) for k in range(n)))))
                matches[n - 1] += sum(min(c, max_ref_counts[g]) for g, c in counts.items())  # clipped
            possible[n - 1] += max(len(words) - n + 1, 0)
    if reference_length == 0:
        raise MetricsInputError("BLEU: every reference is empty (no words after 13a tokenisation)")
    precisions = [m / p if p else 0.0 for m, p in zip(matches, possible)]
    geo_mean = math.exp(sum(math.log(p) / max_order for p in precisions)) if min(precisions) > 0 else 0.0
    ratio = translation_length / reference_length
    brevity_penalty = 1.0 if ratio > 1.0 else math.exp(1 - 1 / ratio) if ratio > 0 else 0.0
    return {
        "bleu": geo_mean * brevity_penalty,
        "precisions": precisions,
        "brevity_penalty": brevity_penalty,
        "length_ratio": ratio,
        "translation_length": translation_length,
        "reference_length": reference_length,
    }
