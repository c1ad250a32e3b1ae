"""loop.py: the schedule, EMA, a diverging loss that stops the run naming its epoch and step, per-step rows,
best-epoch selection, patience, and the learning-rate grid."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import crash_in_epoch, log_rows
from loop import EMA, TrainArgs, TrainingDiverged, fit, lr_lambda
from lrgrid import HeadGrid, per_head_loss
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


# --- per-step rows, best epoch, patience, the learning-rate grid -------------------------------------------

def toy(seed=0, n=32, hidden=6):
    """Separable-ish features, labels and a plain head, as a cached-feature run has them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, hidden, generator=g)
    y = (x[:, 0] + 0.5 * torch.randn(n, generator=g) > 0).long()
    torch.manual_seed(seed)
    return x, y, torch.nn.Linear(hidden, 2, bias=False)


def batches(epoch):
    order = torch.randperm(24, generator=torch.Generator().manual_seed(epoch))
    return list(order.split(4))  # 6 steps an epoch; the last 8 rows validate


def run_fit(tmp_path, head, x, y, scores=None, **cfg):
    """fit on the toy; `scores`: the validation metric per epoch (a constructed run), else the accuracy. Returns
    (Fitted, the head's weights as each epoch validated them)."""
    seen = []
    tmp_path.mkdir(parents=True, exist_ok=True)

    def evaluate():
        seen.append({n: p.detach().clone() for n, p in head.named_parameters()})
        logits = head(x[24:])
        acc = (logits.argmax(-1) == y[24:]).float().mean().item()
        return {"val_loss": F.cross_entropy(logits, y[24:]).item(),
                "accuracy": scores[len(seen) - 1] if scores else acc}
    fitted = fit(head, torch.nn.Module(), batches, lambda b: per_head_loss(F.cross_entropy, head(x[b]), y[b]),
                 evaluate, TrainArgs(**{"epochs": 4, "lr": 0.05, "ema": 0.0, **cfg}), RunDir(tmp_path),
                 torch.device("cpu"), amp=False)
    return fitted, seen


def test_best_epoch_is_kept_when_the_last_is_worse(tmp_path):
    x, y, head = toy()
    fitted, seen = run_fit(tmp_path / "best", head, x, y, scores=[0.5, 0.9, 0.7, 0.6])
    assert fitted.selection == {"rule": "best", "metric": "accuracy", "epoch": 2, "stopped": "completed"}
    assert head.weight.equal(seen[1]["weight"]) and not head.weight.equal(seen[3]["weight"])
    assert [r["epoch"] for r in fitted.rows] == [1, 2, 3, 4]
    x, y, head = toy()
    fitted, seen = run_fit(tmp_path / "last", head, x, y, scores=[0.5, 0.9, 0.7, 0.6], select="last")
    assert fitted.selection["epoch"] == 4 and head.weight.equal(seen[3]["weight"])


def test_a_tie_on_the_metric_goes_to_the_lower_validation_loss(tmp_path):
    x, y, head = toy()
    fitted, seen = run_fit(tmp_path, head, x, y, scores=[0.5, 0.5, 0.5, 0.5])
    losses = [r["val_loss"] for r in fitted.rows]
    assert fitted.selection["epoch"] == 1 + losses.index(min(losses))


def test_patience_stops_and_a_resume_keeps_the_choice(tmp_path):
    x, y, head = toy()
    fitted, seen = run_fit(tmp_path, head, x, y, scores=[0.5, 0.9, 0.7, 0.6, 0.95, 0.99], epochs=6, patience=2)
    assert fitted.selection == {"rule": "best", "metric": "accuracy", "epoch": 2, "stopped": "patience"}
    assert len(fitted.rows) == 4 and head.weight.equal(seen[1]["weight"])
    again = torch.nn.Linear(6, 2, bias=False)
    fitted, seen = run_fit(tmp_path, again, x, y, scores=[0.0] * 6, epochs=6, patience=2, resume=True)
    assert seen == [] and fitted.selection["stopped"] == "patience" and again.weight.equal(head.weight)
    # the checkpoint holds tensors and plain types only
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["selection"]["epochs"] == [2]


def test_a_crash_then_resume_chooses_as_an_uninterrupted_run(tmp_path):
    scores = [0.5, 0.9, 0.7, 0.6]
    x, y, head = toy()
    straight, _ = run_fit(tmp_path / "straight", head, x, y, scores=scores, log_every=4)
    x, y, crashed = toy()
    with crash_in_epoch(3):
        run_fit(tmp_path / "crashed", crashed, x, y, scores=scores, log_every=4)
    x, y, resumed = toy()
    fitted, seen = run_fit(tmp_path / "crashed", resumed, x, y, scores=scores[2:], log_every=4, resume=True)
    assert fitted.selection == straight.selection and resumed.weight.equal(head.weight)
    assert log_rows(tmp_path / "crashed") == log_rows(tmp_path / "straight")


def test_step_rows_sit_beside_the_epoch_rows(tmp_path):
    x, y, head = toy()
    fitted, _ = run_fit(tmp_path, head, x, y, epochs=2, log_every=4, warmup=0.5)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r.get("step", "E") for r in rows] == [4, "E", 8, 12, "E"]  # 6 steps an epoch
    steps = [r for r in rows if "step" in r]
    assert all(set(r) == {"step", "epoch", "loss", "lr", "grad_norm", "examples_per_s"} for r in steps)
    assert [r["epoch"] for r in steps] == [pytest.approx(4 / 6, abs=1e-4), pytest.approx(8 / 6, abs=1e-4), 2.0]
    assert steps[0]["lr"] == pytest.approx(0.05 * 4 / 6)  # the warmup's 4th of 6 steps
    assert all(r["loss"] > 0 and r["grad_norm"] > 0 and r["examples_per_s"] > 0 for r in steps)
    assert [r for r in rows if "step" not in r] == fitted.rows


def test_the_grid_keeps_the_best_head_and_each_head_is_its_own_run(tmp_path):
    """K heads in one batched matmul equal K one-head runs at their rates (clipping and loss per head)."""
    lrs = (1e-3, 3e-2, 3.0)
    x, y, head = toy()
    grid = HeadGrid(head, lrs)
    fitted, _ = run_fit(tmp_path / "grid", grid, x, y, max_grad_norm=0.05)
    scores, losses = [g["score"] for g in fitted.lr_grid], [g["val_loss"] for g in fitted.lr_grid]
    assert [g["lr"] for g in fitted.lr_grid] == list(lrs) and fitted.lr == lrs[losses.index(min(losses))]
    runs = {}
    for k, lr in enumerate(lrs):
        x, y, single = toy()
        alone, _ = run_fit(tmp_path / f"lr{k}", single, x, y, lr=lr, max_grad_norm=0.05)
        runs[lr] = alone.rows
        best = max(alone.rows, key=lambda r: (r["accuracy"], -r["val_loss"]))
        assert scores[k] == pytest.approx(best["accuracy"]) and losses[k] == pytest.approx(best["val_loss"])
        if lr == fitted.lr:
            torch.testing.assert_close(fitted.head.weight, single.weight, rtol=1e-5, atol=1e-6)
            assert fitted.selection["epoch"] == alone.selection["epoch"]
    assert [list(r) for r in fitted.rows] == [list(r) for r in runs[lrs[0]]]  # the epoch rows keep their format
    for e, row in enumerate(fitted.rows):  # a grid's row: the head leading that epoch
        lead = min(lrs, key=lambda lr: (runs[lr][e]["val_loss"], -runs[lr][e]["accuracy"]))
        assert row["accuracy"] == pytest.approx(runs[lead][e]["accuracy"])
        assert row["val_loss"] == pytest.approx(runs[lead][e]["val_loss"], rel=1e-5)


def test_the_grid_ranks_heads_by_validation_loss_not_by_a_lucky_accuracy(tmp_path, capsys):
    """One head validates best by accuracy in every epoch (constructed), yet its validation loss is the higher: the
    grid keeps the other, and records both numbers of each head."""
    x, y, head = toy()
    grid = HeadGrid(head, (1.0, 1e-4))
    fitted, _ = run_fit(tmp_path, grid, x, y, scores=[0.6, 0.9] * 4)  # per epoch: head 1.0, then head 1e-4
    trained, lucky = fitted.lr_grid
    assert lucky["score"] == 0.9 > trained["score"] == 0.6 and lucky["val_loss"] > trained["val_loss"]
    assert fitted.lr == 1.0 and all(r["accuracy"] == 0.6 for r in fitted.rows)
    table = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.count("|") > 2]
    assert [c.strip() for c in table[0][:3]] == ["epoch", "head_lr", "train_loss"]  # the console names the head
    assert [float(r[1]) for r in table[1:]] == [1.0] * 4