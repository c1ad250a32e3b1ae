"""Corpus BLEU with the semantics of the project's reference numbers (metric-cases): Hugging
Face evaluate's "bleu" fed sacrebleu's 13a tokenizer, which returns the tokenised line as ONE
string, so the n-grams (orders 1-4) and lengths are over its characters, spaces included.
(Current evaluate splits that string into words; its numbers then differ from the reference.)
No smoothing, each item's n-gram counts clipped by the max count over its references, and the
brevity penalty taken against each item's SHORTEST reference."""
import math
import re
from collections import Counter

from metrics import MetricsInputError, reference_lists

# sacrebleu's tokenizer_13a (mteval-v13a.pl), applied in order
_13A_RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation and symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless after a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period and comma unless before a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
]


def tokenize_13a(text: str) -> str:
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in text:
        text = text.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    text = f" {text} "  # the rules look at the characters around each symbol
    for pattern, replacement in _13A_RULES:
        text = pattern.sub(replacement, text)
    return " ".join(text.split())


def ngram_counts(text: str, max_order: int) -> Counter:
    return Counter(text[i:i + n] for n in range(1, max_order + 1) for i in range(len(text) - n + 1))


def bleu(predictions: list[str], references: list, max_order: int = 4) -> dict:
    """BLEU of predictions[i] against references[i] (a string or a list of strings), with
    evaluate's keys. Where evaluate would divide by zero: every prediction empty gives
    brevity_penalty 0.0, every reference empty is refused."""
    matches, possible = [0] * max_order, [0] * max_order
    translation_length = reference_length = 0
    for prediction, refs in zip(predictions, reference_lists(predictions, references)):
        text = tokenize_13a(prediction)
        ref_texts = [tokenize_13a(r) for r in refs]
        translation_length += len(text)
        reference_length += min(map(len, ref_texts))
        max_ref_counts = Counter()
        for r in ref_texts:
            max_ref_counts |= ngram_counts(r, max_order)
        for ngram, count in (ngram_counts(text, max_order) & max_ref_counts).items():
            matches[len(ngram) - 1] += count
        for n in range(1, max_order + 1):
            possible[n - 1] += max(len(text) - n + 1, 0)
    if reference_length == 0:
        raise MetricsInputError("BLEU: every reference is empty")
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
