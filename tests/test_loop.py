"""loop.py: the schedule, EMA, and a diverging loss that stops the run naming its epoch and step."""
import math

import pytest
import torch

from loop import EMA, TrainArgs, TrainingDiverged, fit, lr_lambda
from rundir import RunDir


def test_warmup_then_cosine_or_linear():
    cos, lin = lr_lambda(100, 0.1, "cosine"), lr_lambda(100, 0.1, "linear")
    assert [cos(s) for s in (0, 9)] == [0.1, 1.0] and cos(10) == 1.0
    assert cos(55) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5))) and lin(55) == pytest.approx(0.5)
    assert cos(99) < 0.01 and lin(100) == 0.0


def test_ema_starts_as_a_copy_then_averages():
    p = {"w": torch.tensor([1.0])}
    ema = EMA(0.9)
    ema.update(p)
    assert ema.state["w"].item() == 1.0 and ema.state["w"] is not p["w"]
    p["w"].fill_(2.0)
    ema.update(p)
    assert ema.state["w"].item() == pytest.approx(1.1)
    off = EMA(0.0)
    off.update(p)
    assert off.state is None


def test_a_non_finite_loss_stops_with_epoch_and_step_and_keeps_the_last_checkpoint(tmp_path):
    torch.manual_seed(0)
    head, x = torch.nn.Linear(4, 2), torch.randn(8, 4)
    steps = []

    def loss(batch):
        steps.append(batch)
        out = head(x[batch]).pow(2).mean()
        return out * math.nan if len(steps) == 7 else out  # epoch 2 (4 steps an epoch), step 3
    run = RunDir(tmp_path)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 3: the training loss is nan"):
        fit(head, torch.nn.Module(), lambda epoch: [[0, 1], [2, 3], [4, 5], [6, 7]], loss, lambda: {},
            TrainArgs(epochs=3, lr=0.1), run, torch.device("cpu"), amp=False)
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["epoch"] == 1  # epoch 1's checkpoint stays
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1
