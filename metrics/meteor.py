"""METEOR: nltk's meteor_score (alpha 0.9, beta 3, gamma 0.5; exact, Porter-stem and WordNet
synonym matches) on NLTKWordTokenizer tokens, best over each item's references, averaged."""
import functools
from types import SimpleNamespace

from nltk.stem.porter import PorterStemmer
from nltk.tokenize import NLTKWordTokenizer
from nltk.translate.meteor_score import meteor_score

from metrics import reference_lists, wordnet


def meteor(predictions: list[str], references: list) -> dict[str, float]:
    """{"meteor": mean over items}. Raises wordnet.WordNetMissing (saying how to install it)
    rather than scoring without synonyms."""
    refs = reference_lists(predictions, references)
    # Answers repeat the same words over and over: memoise nltk's pure per-word steps.
    tokenize = functools.cache(NLTKWordTokenizer().tokenize)
    stemmer = SimpleNamespace(stem=functools.cache(PorterStemmer().stem))
    synonyms = SimpleNamespace(synsets=functools.cache(wordnet.load().synsets))
    total = 0.0
    for prediction, item_refs in zip(predictions, refs):
        total += meteor_score([tokenize(r) for r in item_refs], tokenize(prediction), stemmer=stemmer, wordnet=synonyms)
    return {"meteor": total / len(predictions)}
