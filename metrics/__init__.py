"""Evaluation metrics, each in its own module: squad (official SQuAD 2.0 numbers plus BLEU,
ROUGE and METEOR over the answerable questions), bleu, rouge, meteor, classification.
`python -m metrics.squad preds.json` scores a predictions file; `python -m metrics.wordnet
install` sets up the WordNet data METEOR needs."""
import argparse
import sys
from collections.abc import Collection, Sequence


class MetricsInputError(ValueError):
    """Input a metric refuses. The message is one line, fit to print as a CLI error."""


class CliParser(argparse.ArgumentParser):
    """argparse for the metrics CLIs with the project's error format: one line on stderr, exit 2,
    no usage block. Here, not in the project's flags.py: the metrics package stands alone."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _as_list(value, name: str, wanted: str) -> list:
    # a lone string is a collection too, but a mistake here, not a list of characters; a one-shot
    # iterator is refused because the metrics iterate the predictions again after this check
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        raise MetricsInputError(f"{name} must be {wanted}, not {type(value).__name__}")
    return list(value)


def reference_lists(predictions: Sequence[str], references: Sequence) -> list[list[str]]:
    """One list of reference strings per prediction (a bare string is one reference),
    after checking that predictions and references pair up. Errors name the argument and index."""
    preds = _as_list(predictions, "predictions", "a list of strings")
    refs = _as_list(references, "references", "a list with a reference string or a list of them per prediction")
    for i, p in enumerate(preds):
        if not isinstance(p, str):
            raise MetricsInputError(f"predictions[{i}] must be a string, not {type(p).__name__}")
    if len(preds) != len(refs):
        raise MetricsInputError(f"{len(preds)} predictions but {len(refs)} reference lists")
    if not preds:
        raise MetricsInputError("nothing to score: no predictions")
    lists = []
    for i, r in enumerate(refs):
        item = [r] if isinstance(r, str) else _as_list(r, f"references[{i}]", "a string or a list of strings")
        if not item:
            raise MetricsInputError(f"references[{i}] is an empty list: each prediction needs a reference "
                                    "string or a non-empty list of them")
        for j, text in enumerate(item):
            if not isinstance(text, str):
                raise MetricsInputError(f"references[{i}][{j}] must be a string, not {type(text).__name__}")
        lists.append(item)
    return lists
