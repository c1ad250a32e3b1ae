"""metrics.meteor: nltk's METEOR with WordNet (installed by `python -m metrics.wordnet install`)."""
import random
from itertools import islice

import nltk
import pytest
from hypothesis import given, settings, strategies as st
from nltk.stem.porter import PorterStemmer
from nltk.tokenize import NLTKWordTokenizer
from nltk.translate.meteor_score import meteor_score

import metrics.meteor as meteor_module
from metrics import squad, wordnet
from metrics.meteor import meteor

words = st.text(alphabet="abcdefghij", min_size=1, max_size=6)


def test_nltk_documented_example():
    assert round(meteor([wordnet.EXAMPLE_HYPOTHESIS], [[wordnet.EXAMPLE_REFERENCE]])["meteor"], 4) == 0.6944


def test_identical_scores_one_minus_fragmentation_penalty():
    # one chunk of n matches: penalty 0.5 * (1/n)**3, so n = 1 gives 0.5, not 1
    assert meteor(["Paris"], ["Paris"])["meteor"] == 0.5
    assert meteor(["the city of Paris"], ["the city of Paris"])["meteor"] == pytest.approx(1 - 0.5 / 4**3)


def test_uses_stems_and_wordnet_synonyms():
    assert meteor(["runs"], ["running"])["meteor"] == 0.5  # Porter stem match
    # WordNet synonyms; nltk looks up the Porter stems, so "large" (stem "larg") finds no "big"
    assert meteor(["quick"], ["fast"])["meteor"] == meteor(["car"], ["auto"])["meteor"] == 0.5
    assert meteor(["large"], ["big"])["meteor"] == meteor(["zebra"], ["fast"])["meteor"] == 0.0


def test_best_reference_then_mean():
    assert meteor(["Paris", ""], [["London", "Paris"], ["x"]])["meteor"] == pytest.approx(0.25)


def test_without_wordnet_it_refuses_with_install_hint(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(wordnet.WordNetMissing, match=r"python -m metrics\.wordnet install"):
        meteor(["a"], ["a"])
    preds, dataset = tmp_path / "preds.json", tmp_path / "data.json"
    preds.write_text('{"q": "x"}')
    dataset.write_text('{"data": [{"paragraphs": [{"context": "x", "qas": [{"id": "q", "question": "?", '
                       '"answers": [{"text": "x", "answer_start": 0}]}]}]}]}')
    assert squad.main([str(preds), "--data", str(dataset)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "METEOR needs WordNet" in err and "make setup" in err


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.lists(words, min_size=1, max_size=6), st.lists(words, min_size=1, max_size=6)),
                min_size=1, max_size=5), st.randoms())
def test_properties(items, rnd):
    predictions = [" ".join(p) for p, _ in items]
    references = [[" ".join(r)] for _, r in items]
    result = meteor(predictions, references)["meteor"]
    assert 0.0 <= result <= 1.0
    order = list(range(len(items)))
    rnd.shuffle(order)
    assert meteor([predictions[i] for i in order], [references[i] for i in order])["meteor"] == pytest.approx(result, abs=1e-12)
    for prediction in predictions:  # identical: exactly the fragmentation penalty of one chunk
        n = len(NLTKWordTokenizer().tokenize(prediction))
        assert meteor([prediction], [prediction])["meteor"] == pytest.approx(1 - 0.5 / n**3)


# --- the fast alignment and tokenising give nltk's numbers --------------------------------------




VOCAB = ("run runs running ran quick fast speedy car auto automobile big large city town cities the a of "
         "Paris dogs dog went go goes better good well mice mouse CAR , . expert ace adept saw see people "
         "citizenry leader leaders Viking bronco broncos 1066 can't cannot wanna 'tis tying tie").split()
sentences = st.lists(st.sampled_from(VOCAB), max_size=10).map(" ".join)


def nltk_meteor(prediction: str, refs: list[str]) -> float:
    tokenizer = NLTKWordTokenizer()
    return meteor_score([tokenizer.tokenize(r) for r in refs], tokenizer.tokenize(prediction), wordnet=wordnet.load())


@settings(max_examples=150, deadline=None)
@given(sentences, st.lists(sentences.filter(str.strip), min_size=1, max_size=3))
def test_same_numbers_as_nltk(prediction, refs):
    """Exact, stem and synonym matches, repeated words, several references: nltk's number exactly."""
    assert meteor([prediction], [refs])["meteor"] == nltk_meteor(prediction, refs)


def test_long_prediction_same_number_as_nltk():
    rng = random.Random(0)
    prediction = "\n".join(" ".join(rng.choices(VOCAB, k=40)) for _ in range(400))  # ~100 KB
    refs = ["the quick car of Paris", "a big city", "expert leaders ran"]
    assert meteor([prediction], [refs])["meteor"] == nltk_meteor(prediction, refs)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("ab1 ,;:?!.'\"()[]{}<>-\n\t&$«»“”`*") + [
    "can't", "cannot", "wanna", "'tis", "N'T", "...", "--", " 't", "Q9", "d'ye"]), max_size=40).map("".join),
       st.sampled_from([0, 1, 8, 64]))
def test_tokenize_in_pieces_is_nltks_tokenize(text, batch):
    """Cut where no rule looks across, pieces tokenised in batches or stretches: nltk's tokens."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(meteor_module, "_WHOLE", 0)
        mp.setattr(meteor_module, "_BATCH", batch)
        assert meteor_module.tokenize(text) == NLTKWordTokenizer().tokenize(text)
        repeated = " ".join([text.strip() or "x"] * 6)  # repeated pieces: the sentinel-batch path
        assert meteor_module.tokenize(repeated) == NLTKWordTokenizer().tokenize(repeated)


def test_porter_stems_keep_the_first_two_letters():
    """What _Lexicon relies on to skip words: a stem of two or more letters starts with the word's
    first two letters (one letter: the word's first), except for the stemmer's irregular forms."""
    stemmer = PorterStemmer()
    rng = random.Random(0)
    words = {name.lower() for synset in islice(wordnet.load().all_synsets(), 0, None, 7) for name in synset.lemma_names()}
    suffixes = ["", "s", "es", "ies", "sses", "ed", "eed", "ing", "ied", "ational", "izer", "ization", "ator",
                "alli", "fulness", "biliti", "logi", "y", "ly", "bli", "e", "ll", "at", "bl", "iz"]
    words |= {"".join(rng.choices("aeiouybcdfglmnrstvxz", k=rng.randint(0, 4))) + rng.choice(suffixes) + rng.choice(suffixes)
              for _ in range(20000)}
    for word in sorted(w for w in words if w and w not in stemmer.pool):
        stem = stemmer.stem(word)
        assert stem[:1] == word[:1] and (len(stem) < 2 or stem[:2] == word[:2]), (word, stem)
