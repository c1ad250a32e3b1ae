"""Evaluation metrics, each in its own module: squad (official SQuAD 2.0 numbers plus BLEU,
ROUGE and METEOR over the answerable questions), bleu, rouge, meteor, classification.
`python -m metrics.squad preds.json` scores a predictions file; `python -m metrics.wordnet
install` sets up the WordNet data METEOR needs."""
from collections.abc import Sequence


class MetricsInputError(ValueError):
    """Input a metric refuses. The message is one line, fit to print as a CLI error."""


def reference_lists(predictions: Sequence[str], references: Sequence) -> list[list[str]]:
    """One list of reference strings per prediction (a bare string is one reference),
    after checking that predictions and references pair up."""
    if isinstance(predictions, str) or not all(isinstance(p, str) for p in predictions):
        raise MetricsInputError("predictions must be a list of strings")
    if len(predictions) != len(references):
        raise MetricsInputError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        raise MetricsInputError("nothing to score: no predictions")
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    if not all(r and all(isinstance(t, str) for t in r) for r in refs):
        raise MetricsInputError("each prediction needs a reference string or a non-empty list of them")
    return refs
