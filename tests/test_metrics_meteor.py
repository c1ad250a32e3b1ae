"""metrics.meteor: nltk's METEOR with WordNet (installed by `python -m metrics.wordnet install`)."""
import nltk
import pytest
from hypothesis import given, settings, strategies as st
from nltk.tokenize import NLTKWordTokenizer

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
