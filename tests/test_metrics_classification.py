"""metrics.classification: binary and macro metrics, zero division defined as 0.0."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from metrics import MetricsInputError
from metrics.classification import classification_metrics, matthews_corrcoef


def test_binary_by_hand():
    # TP 2, FP 1, FN 1, TN 1
    result = classification_metrics([1, 1, 1, 0, 0], [1, 1, 0, 1, 0])
    assert result == {"accuracy": 0.6, "precision": 2 / 3, "recall": 2 / 3, "f1": pytest.approx(2 / 3)}
    # positive_label picks the class: TP 1, FP 1, FN 1
    assert classification_metrics([1, 1, 1, 0, 0], [1, 1, 0, 1, 0], positive_label=0)["precision"] == 0.5
    assert classification_metrics(["neg", "pos"], ["pos", "pos"], positive_label="pos")["recall"] == 1.0


def test_matthews_by_hand():
    # binary, TP 2, FP 1, FN 1, TN 1: (2*1 - 1*1) / sqrt(3 * 3 * 2 * 2) = 1/6
    assert matthews_corrcoef([1, 1, 1, 0, 0], [1, 1, 0, 1, 0]) == pytest.approx(1 / 6)
    # three labels: 3 of 6 right, true counts (2, 2, 2), predicted (3, 1, 2):
    # (3*6 - (2*3 + 2*1 + 2*2)) / sqrt((36 - 12) * (36 - 14)) = 6 / sqrt(528)
    assert matthews_corrcoef([0, 1, 2, 0, 1, 2], [0, 2, 1, 0, 0, 2]) == pytest.approx(6 / 528 ** 0.5)
    assert matthews_corrcoef(["a", "b", "a"], ["a", "b", "a"]) == 1.0
    assert matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == -1.0


def test_matthews_undefined_is_zero():
    """One predicted (or one true) label: the denominator is 0, and the score is 0.0, as scikit-learn's."""
    assert matthews_corrcoef([0, 1, 1], [1, 1, 1]) == 0.0 and matthews_corrcoef([1, 1], [0, 1]) == 0.0
    with pytest.raises(MetricsInputError):
        matthews_corrcoef([0, 1], [0])


def test_f1_is_the_positive_class_f1_glue_reports():
    """MRPC/QQP's F1: of label 1. TP 3, FP 1, FN 2, TN 2: P 3/4, R 3/5, F1 2PR/(P+R) = 2/3."""
    result = classification_metrics([1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 1, 0, 0])
    assert result["f1"] == pytest.approx(2 / 3) and result["accuracy"] == 5 / 8


def test_zero_division_is_zero():
    assert classification_metrics([1, 0], [0, 0]) == {"accuracy": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert classification_metrics([0, 0], [0, 0]) == {"accuracy": 1.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert classification_metrics([0, 0], [1, 0]) == {"accuracy": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_macro_by_hand():
    # per label (P, R, F1): a (1, 1/2, 2/3), b (1/2, 1/2, 1/2), c (0, 0, 0): c is only predicted, wrongly
    result = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "c"], average="macro")
    assert result == pytest.approx({"accuracy": 2 / 4, "precision": 1.5 / 3, "recall": 1 / 3, "f1": (2 / 3 + 1 / 2) / 3})


def test_arrays_and_tensors():
    expected = classification_metrics([1, 0, 1], [1, 1, 1])
    assert classification_metrics(np.array([1, 0, 1]), np.array([1, 1, 1])) == expected
    assert classification_metrics(torch.tensor([1, 0, 1]), torch.tensor([1, 1, 1])) == expected


def test_refusals():
    with pytest.raises(MetricsInputError, match="3 true labels but 2 predictions"):
        classification_metrics([1, 0, 1], [1, 0])
    with pytest.raises(MetricsInputError, match="no labels"):
        classification_metrics([], [])
    with pytest.raises(MetricsInputError, match="use average='macro'"):
        classification_metrics([0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="'binary' or 'macro'"):
        classification_metrics([0], [0], average="micro")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=30))
def test_properties(pairs):
    y_true, y_pred = map(list, zip(*pairs))
    result = classification_metrics(y_true, y_pred, average="macro")
    assert all(0.0 <= v <= 1.0 for v in result.values())
    assert classification_metrics(y_true, y_true, average="macro") == dict.fromkeys(result, 1.0)
    binary_true, binary_pred = [t % 2 for t in y_true], [p % 2 for p in y_pred]
    assert all(0.0 <= v <= 1.0 for v in classification_metrics(binary_true, binary_pred).values())
