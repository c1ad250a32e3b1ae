"""Accuracy, precision, recall, F1 and Matthews correlation for label predictions."""
import math
from collections import Counter
from collections.abc import Hashable, Sequence

from metrics import MetricsInputError


def _checked(y_true: Sequence, y_pred: Sequence) -> tuple[list, list]:
    """Both as lists of Python scalars (numpy arrays and tensors too: they compare and hash by value), paired."""
    y_true, y_pred = (y.tolist() if hasattr(y, "tolist") else list(y) for y in (y_true, y_pred))
    if len(y_true) != len(y_pred):
        raise MetricsInputError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if not y_true:
        raise MetricsInputError("nothing to score: no labels")
    return y_true, y_pred


def _precision_recall_f1(y_true: Sequence, y_pred: Sequence, label: Hashable) -> tuple[float, float, float]:
    true_pos = sum(t == label and p == label for t, p in zip(y_true, y_pred))
    predicted, actual = sum(p == label for p in y_pred), sum(t == label for t in y_true)
    precision = true_pos / predicted if predicted else 0.0
    recall = true_pos / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def classification_metrics(y_true: Sequence, y_pred: Sequence, positive_label: Hashable = 1,
                           average: str = "binary") -> dict[str, float]:
    """{"accuracy", "precision", "recall", "f1"}, all in [0, 1]; y_true and y_pred are lists,
    numpy arrays or tensors of labels.

    average="binary": precision/recall/F1 of positive_label (y may hold at most two labels).
    average="macro": the unweighted mean over every label seen in y_true or y_pred of each
    label's precision, recall and F1 (so macro F1 is the mean of per-label F1s).
    A ratio whose denominator is zero (no predicted or no actual instances of a label, or
    precision + recall = 0) is defined as 0.0, as scikit-learn's zero_division=0 does.
    """
    y_true, y_pred = _checked(y_true, y_pred)
    labels = sorted(set(y_true) | set(y_pred))
    accuracy = sum(t == p for t, p in zip(y_true, y_pred)) / len(y_true)
    if average == "binary":
        if len(labels) > 2:
            raise MetricsInputError(f"binary metrics need at most two labels, got {len(labels)}; use average='macro'")
        precision, recall, f1 = _precision_recall_f1(y_true, y_pred, positive_label)
    elif average == "macro":
        scores = per_label(y_true, y_pred).values()
        precision, recall, f1 = (sum(s[k] for s in scores) / len(labels) for k in ("precision", "recall", "f1"))
    else:
        raise MetricsInputError(f"average must be 'binary' or 'macro', not {average!r}")
    return {"accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1}


def per_label(y_true: Sequence, y_pred: Sequence) -> dict[Hashable, dict[str, float]]:
    """{label: {"precision", "recall", "f1", "support"}} for every label seen in y_true or y_pred, in sorted order;
    support is the label's count in y_true. Zero denominators give 0.0, as in classification_metrics."""
    y_true, y_pred = _checked(y_true, y_pred)
    return {label: {**dict(zip(("precision", "recall", "f1"), _precision_recall_f1(y_true, y_pred, label))),
                    "support": sum(t == label for t in y_true)} for label in sorted(set(y_true) | set(y_pred))}


def matthews_corrcoef(y_true: Sequence, y_pred: Sequence) -> float:
    """Matthews correlation coefficient in [-1, 1], GLUE's CoLA metric: for two labels
    (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)), and for more its multiclass form (Gorodkin's R_K, as
    scikit-learn computes it). 0.0 where it is undefined (all true or all predicted labels the same), as
    scikit-learn returns."""
    y_true, y_pred = _checked(y_true, y_pred)
    n, correct = len(y_true), sum(t == p for t, p in zip(y_true, y_pred))
    true, pred = Counter(y_true), Counter(y_pred)
    cov_true_pred = correct * n - sum(true[k] * pred[k] for k in true)
    cov_true = n * n - sum(c * c for c in true.values())
    cov_pred = n * n - sum(c * c for c in pred.values())
    return cov_true_pred / math.sqrt(cov_true * cov_pred) if cov_true and cov_pred else 0.0
