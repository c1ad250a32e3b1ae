"""batching.py: length-sorted batches that fit the token budget and pad little."""
import itertools
import random
from pathlib import Path

from hypothesis import given, settings, strategies as st

from batching import length_batches

ROOT = Path(__file__).resolve().parents[1]


# --- length batches ----------------------------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 300), max_size=200), st.integers(1, 2048), st.integers(1, 64))
def test_length_batches_cover_once_and_fit(lengths, max_tokens, max_batch):
    batches = length_batches(lengths, max_tokens, max_batch)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert b and len(b) <= max_batch
        assert max(lengths[i] for i in b) * len(b) <= max_tokens or len(b) == 1  # only a lone long item may exceed


def padding_overhead(lengths, batches):
    return sum(max(lengths[i] for i in b) * len(b) for b in batches) / sum(lengths) - 1


def test_length_batches_leave_little_padding_on_sst2(smollm2_tokenizer):
    from data.labelled import read_labelled
    texts = read_labelled(ROOT / "data" / "samples" / "sst2" / "train.tsv").texts
    lengths = [len(s) for s in smollm2_tokenizer(texts)["input_ids"]]
    batches = length_batches(lengths, 1024)
    shuffled = list(range(len(lengths)))
    random.Random(0).shuffle(shuffled)
    sizes = [len(b) for b in batches]
    unsorted = [shuffled[start:start + n] for start, n in zip(itertools.accumulate([0] + sizes), sizes)]
    assert padding_overhead(lengths, batches) < 0.1  # measured 4%
    assert padding_overhead(lengths, unsorted) > 1.0  # the same batch sizes, unsorted: ~2.5x the tokens
