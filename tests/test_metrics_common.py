"""What the metrics modules share: the checks of predictions and references (metrics.reference_lists)
and the one-line usage errors of their CLIs (metrics.CliParser)."""
import subprocess
import sys
from pathlib import Path

import pytest

from metrics import MetricsInputError
from metrics.bleu import bleu
from metrics.meteor import meteor
from metrics.rouge import rouge

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("metric", [bleu, rouge, meteor])
@pytest.mark.parametrize("predictions, references, message", [
    (["a"], [None], "references[0] must be a string or a list of strings, not NoneType"),
    (["a", "b"], ["a", 3], "references[1] must be a string or a list of strings, not int"),
    (["a"], [["a", None]], "references[0][1] must be a string, not NoneType"),
    (["a"], [b"a"], "references[0] must be a string or a list of strings, not bytes"),
    (["a", None], ["a", "b"], "predictions[1] must be a string, not NoneType"),
    (None, ["a"], "predictions must be a list of strings, not NoneType"),
    (["a"], None, "references must be a list"),
    (iter(["a"]), ["a"], "predictions must be a list of strings, not list_iterator"),  # read twice: a list
], ids=["reference None", "reference int", "None in a reference list", "reference bytes", "prediction None",
        "predictions None", "references None", "predictions an iterator"])
def test_bad_items_name_the_argument_and_index(metric, predictions, references, message):
    with pytest.raises(MetricsInputError) as info:
        metric(predictions, references)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("args, names", [
    (["metrics.squad"], "predictions"),
    (["metrics.squad", "preds.json", "--bogus"], "--bogus"),
    (["metrics.squad", "preds.json", "--data"], "--data"),
    (["metrics.wordnet"], "command"),
    (["metrics.wordnet", "nope"], "nope"),
])
def test_cli_usage_errors_are_one_line(args, names):
    run = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1 and "usage:" not in run.stderr
    assert names in run.stderr and run.stderr.endswith(f"(see python -m {args[0]} --help)\n")
