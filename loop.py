"""The training loop: AdamW with warmup and a cosine or linear schedule, gradient accumulation, torchrun
gradient averaging, weight averaging (EMA), a checkpoint per epoch, and exact resume."""
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import distributed
from lrgrid import HeadGrid
from modes import check_same, trained_parameters
from rundir import RunDir
from tables import print_row


@dataclass
class TrainArgs:
    epochs: int = 3
    lr: float | None = 1e-3  # the head's; None: --lr auto, a HeadGrid carrying one per head
    backbone_lr: float = 1e-5  # what trains in the backbone, if anything
    weight_decay: float = 0.0
    warmup: float = 0.1  # fraction of the steps
    schedule: str = "cosine"  # or "linear"
    max_grad_norm: float = 1.0
    ema: float = 0.97  # weight averaging decay (0: off)
    grad_accum: int = 1  # batches per optimizer step
    resume: bool = False
    select: str = "best"  # the kept epoch: the best validation score, or the last
    metric: str = "accuracy"  # the validation row's score (higher is better) that "best" and patience read
    patience: int = 0  # stop after this many epochs without a better validation score (0: never)
    log_every: int = 10  # optimizer steps between per-step rows (0: epoch rows only)
    tensorboard: bool = False  # also write RUN/tensorboard/ event files


@dataclass
class Fitted:
    """What fit leaves: the kept head (a grid's best one), the epoch rows, and how the kept weights were chosen."""
    head: nn.Module
    rows: list[dict]
    selection: dict  # metrics.json's "selection": rule, metric, the kept epoch (1-based), why training stopped
    lr: float  # the kept head's learning rate
    lr_grid: list[dict] | None  # a grid's learning rates and each head's validation score


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint stays."""


class EMA:
    """An exponential moving average of the trained weights, evaluated and kept in their place at the end: on raw
    LLM features (large, uncentred outlier dimensions) the last AdamW steps otherwise leave a noisy decision bias.
    The first update copies the weights, as torch's AveragedModel does."""

    def __init__(self, decay: float, state: dict[str, torch.Tensor] | None = None):
        self.decay, self.state = decay, state

    def update(self, params: dict[str, torch.Tensor]) -> None:
        if not self.decay:
            return
        if self.state is None:
            self.state = {n: p.detach().clone() for n, p in params.items()}
        else:
            for n, p in params.items():
                self.state[n].lerp_(p.detach(), 1 - self.decay)


def lr_lambda(total_steps: int, warmup: float, schedule: str) -> Callable[[int], float]:
    warm = max(1, int(total_steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else max(0.0, 1 - progress)
    return factor


@dataclass
class Heads:
    """What fit trains side by side: one head (with what trains in the backbone), or a HeadGrid's K heads, each with
    its own learning rate, gradient clipping, validation and kept weights. `names`: each head's parameters."""
    names: list[list[str]]
    lrs: list[float]
    groups: list[dict]  # the optimizer's parameter groups; group k holds head k's learning rate
    grid: HeadGrid | None

    @classmethod
    def of(cls, head: nn.Module, params: dict[str, torch.Tensor], cfg: TrainArgs) -> "Heads":
        if isinstance(head, HeadGrid):
            names = head.param_names("head.")
            if set(params) != {n for ns in names for n in ns}:
                raise ValueError("a grid of heads trains on a frozen backbone (modes.Mode.lr_grid)")
            return cls(names, list(head.lrs), [{"params": [params[n] for n in ns], "lr": lr}
                                               for ns, lr in zip(names, head.lrs)], head)
        lrs = {"head": cfg.lr, "backbone": cfg.backbone_lr}
        groups = [{"params": group, "lr": lr} for part, lr in lrs.items()
                  if (group := [p for n, p in params.items() if n.startswith(part + ".")])]
        return cls([list(params)], [cfg.lr], groups, None)

    def clip(self, params: dict[str, torch.Tensor], max_norm: float) -> list[torch.Tensor]:
        """Each head's gradients clipped by their own norm (as its one-head run would); the norms before."""
        return [torch.nn.utils.clip_grad_norm_([params[n] for n in ns], max_norm) for ns in self.names]

    def validate(self, evaluate: Callable[[], dict]) -> list[dict]:
        if self.grid is None:
            return [evaluate()]
        rows = []
        for k in range(len(self.lrs)):
            with self.grid.only(k):
                rows.append(evaluate())
        return rows


def head_rank(score: list[float]) -> tuple[float, float]:
    """How a grid's heads compare, higher is better: the lower validation loss, then the metric. On the demos'
    200-400 validation rows the heads' accuracies lie a few examples apart and reorder by chance, and accuracy cannot
    see a head that overshoots (validation losses 2.3-9.3 at rates 0.1 and 0.3, 0.45-0.66 at 0.001-0.003): ranked
    by accuracy the pair demo kept 0.3 and tested 0.614 with loss 12.0; by loss it keeps 0.001: 0.620, loss 0.66."""
    return score[1], score[0]


def score(row: dict, metric: str) -> list[float]:
    """A validation row's rank, higher is better: the metric, then the loss (small validation sets tie often); a
    missing or non-finite metric ranks last."""
    value, loss = row.get(metric), row.get("val_loss", 0.0)
    value = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else -math.inf
    return [value, -float(loss) if isinstance(loss, (int, float)) and math.isfinite(loss) else -math.inf]


class Selection:
    """The weights kept of each head, as validated (EMA applied): those of its best epoch by `score` ("best"), or of
    its last ("last"); and the best score of any head so far, from which --patience counts. Its state is plain
    types and tensors, saved in each checkpoint."""

    def __init__(self, rule: str, n: int, state: dict | None = None):
        self.rule = rule
        self.state = state or {"scores": [None] * n, "epochs": [0] * n, "weights": {}, "peak": None,
                               "peak_epoch": 0, "stopped": "completed"}

    def update(self, epoch: int, scores: list[list[float]], names: list[list[str]],
               weights: dict[str, torch.Tensor]) -> None:
        s = self.state
        for k, new in enumerate(scores):
            if self.rule == "last" or s["scores"][k] is None or new > s["scores"][k]:
                s["scores"][k], s["epochs"][k] = new, epoch
                s["weights"].update({n: weights[n].detach().clone() for n in names[k]})
        if s["peak"] is None or max(scores) > s["peak"]:
            s["peak"], s["peak_epoch"] = max(scores), epoch

    def stale(self, epoch: int) -> int:
        return epoch - self.state["peak_epoch"]

    def best(self) -> int | None:
        known = [k for k, s in enumerate(self.state["scores"]) if s is not None]
        return max(known, key=lambda k: head_rank(self.state["scores"][k])) if known else None


class StepLog:
    """log.jsonl's rows in order, per-step and per-epoch. They reach the file with each epoch's checkpoint
    (RunDir.save_epoch), which holds the same rows: the log and the checkpoint always describe the same epoch, and a
    resumed run keeps the rows of its finished epochs and drops those of the epoch it repeats. With cfg.tensorboard
    the same numbers go to RUN/tensorboard/ as they come (rank 0)."""

    def __init__(self, run: RunDir, rows: list[dict], tensorboard: bool, resumed_at: int | None):
        self.rows, self.writer = rows, None
        if distributed.is_main() and tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # flags.parse checked that it imports
            # a resumed run's writer drops the events an interrupted epoch wrote past its checkpoint
            self.writer = SummaryWriter(str(run.file("tensorboard")), purge_step=resumed_at)

    def step(self, row: dict) -> None:
        self.rows.append(row)
        self._scalars("train", row, row["step"], skip=("step", "epoch"))

    def epoch(self, row: dict, step: int) -> None:
        self.rows.append(row)
        self._scalars("epoch", row, step, skip=())

    def _scalars(self, prefix: str, row: dict, step: int, skip: tuple[str, ...]) -> None:
        if self.writer is not None:
            for k, v in row.items():
                if k not in skip and isinstance(v, (int, float)):
                    self.writer.add_scalar(f"{prefix}/{k}", v, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Optimizer:
    """One optimizer step's machinery, as train_epoch uses it."""
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: EMA
    heads: Heads
    amp_dtype: torch.dtype
    amp: bool


def fit(head: nn.Module, backbone: nn.Module, epoch_batches: Callable[[int], list], loss_fn: Callable,
        evaluate: Callable[[], dict], cfg: TrainArgs, run: RunDir, device: torch.device, amp: bool) -> Fitted:
    """Train the head (at cfg.lr; a HeadGrid: each head at its own) and whatever requires grad in the backbone (at
    cfg.backbone_lr) for cfg.epochs; after each epoch validate, log a row and checkpoint, so an interrupted run
    (cfg.resume) loses at most one epoch. The weights left in place, and the head returned, are those cfg.select
    keeps (the best validation epoch, or the last), of the grid's head with the best validation score.

    epoch_batches(epoch) gives that epoch's (seeded, shuffled) batches, cfg.grad_accum of them per optimizer step;
    loss_fn(batch) the mean loss over the batch's items (a grid: each head's, a (K,) vector); evaluate() the
    validation row (a grid: each head's in turn, inside HeadGrid.only). With cfg.ema the averaged weights are the
    ones evaluated and kept. amp: autocast the forward (a training backbone on CUDA). The modules end in eval mode
    whatever happened, so every later evaluation runs without dropout."""
    parts = nn.ModuleDict({"head": head, "backbone": backbone})
    params = trained_parameters(backbone, head)
    heads = Heads.of(head, params, cfg)
    fused = device.type == "cuda" and all(p.is_cuda for p in params.values())  # one kernel for the whole step
    opt = torch.optim.AdamW(heads.groups, weight_decay=cfg.weight_decay, fused=fused or None)
    steps_per_epoch = math.ceil(len(epoch_batches(0)) / cfg.grad_accum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps_per_epoch * cfg.epochs, cfg.warmup, cfg.schedule))
    amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    ema, log, first, chosen = EMA(cfg.ema), [], 0, None
    # rank 0's checkpoint on every rank (other machines need not hold the run folder), sent from the CPU: a CUDA
    # tensor pickled on rank 0 unpickles onto rank 0's GPU in every rank; each part moves to its device below
    state = distributed.from_main(lambda: run.load_checkpoint(torch.device("cpu"))) if cfg.resume else None
    if state is not None:
        check_same(state["trained"], params, run.file("ckpt.pt"))
        assign(params, state["trained"])
        for obj, key in ((opt, "opt"), (sched, "sched"), (scaler, "scaler")):
            obj.load_state_dict(state[key])
        set_rng_state(state, device)
        ema.state, first = _to(state["ema"], device), state["epoch"]
        log = state["log"] if "log" in state else state["rows"]  # runs from before per-step rows kept epoch rows
        chosen = state.get("selection")  # runs from before best-epoch selection have none
        if chosen is not None:
            chosen["weights"] = _to(chosen["weights"], device)
        print(f"resumed from {run.file('ckpt.pt')} after epoch {first}")
    sel = Selection(cfg.select, len(heads.lrs), chosen)
    if sel.state["stopped"] == "patience":
        first = cfg.epochs  # stopped early: resuming changes nothing
    steps = StepLog(run, log, cfg.tensorboard, first * steps_per_epoch + 1 if state is not None else None)
    o = Optimizer(opt, sched, scaler, ema, heads, amp_dtype, amp)
    try:
        for epoch in range(first, cfg.epochs):
            parts.train()
            seen, alive = train_epoch(epoch, epoch_batches(epoch), loss_fn, params, o, cfg, device, steps,
                                      steps_per_epoch, sel)
            parts.eval()
            trained = {n: p.detach().clone() for n, p in params.items()}
            if ema.state is not None:  # the averaged weights are the ones evaluated and kept
                assign(params, ema.state)
            rows = heads.validate(evaluate)
            scores = [score(r, cfg.metric) if ok else [-math.inf, -math.inf] for r, ok in zip(rows, alive)]
            sel.update(epoch + 1, scores, heads.names, params)
            lead = max(range(len(rows)), key=lambda k: head_rank(scores[k]))  # a grid's row: its leader's
            train_loss = float(seen[0][lead] / seen[1][lead].clamp(min=1))
            row = {"epoch": epoch + 1, "train_loss": train_loss, **rows[lead]}
            # the console names a grid row's head, so a change of leader reads as one, not as a jump in one head's
            # loss; log.jsonl's epoch rows keep their format
            shown = {"head_lr": heads.lrs[lead]} if heads.grid is not None else {}
            print_row({"epoch": epoch + 1, **shown, **row}, header=epoch == first)
            if stop := cfg.patience and sel.stale(epoch + 1) >= cfg.patience and epoch + 1 < cfg.epochs:
                sel.state["stopped"] = "patience"
            steps.epoch(row, (epoch + 1) * steps_per_epoch)
            if distributed.is_main():
                run.save_epoch(steps.rows, {"trained": trained, "opt": opt.state_dict(), "sched": sched.state_dict(),
                                            "scaler": scaler.state_dict(), "ema": ema.state, **rng_state(device),
                                            "log": steps.rows, "epoch": epoch + 1, "selection": sel.state})
            if stop:
                print(f"no better validation {cfg.metric} for {cfg.patience} epoch(s) (--patience): stopped after "
                      f"epoch {epoch + 1}")
                break
            assign(params, trained)
    finally:
        steps.close()
        parts.eval()
    return kept(head, params, heads, sel, ema, cfg, [r for r in steps.rows if "step" not in r])


def kept(head: nn.Module, params: dict[str, torch.Tensor], heads: Heads, sel: Selection, ema: EMA, cfg: TrainArgs,
         rows: list[dict]) -> Fitted:
    """The selected weights in place (a run from before selection: its averaged weights, as it ended), and the head
    they make: a grid's best head as a plain one."""
    k = sel.best() or 0
    if sel.state["weights"]:
        assign(params, sel.state["weights"])
    elif ema.state is not None:
        assign(params, ema.state)
    epoch = sel.state["epochs"][k] or (rows[-1]["epoch"] if rows else 0)
    selection = {"rule": cfg.select, "metric": cfg.metric, "epoch": epoch, "stopped": sel.state["stopped"]}
    if heads.grid is None:
        return Fitted(head, rows, selection, cfg.lr, None)
    grid = [{"lr": lr, "score": finite(s[0]), "val_loss": finite(-s[1])} if s is not None else
            {"lr": lr, "score": None, "val_loss": None} for lr, s in zip(heads.lrs, sel.state["scores"])]
    print(f"learning rate grid (validation loss / {cfg.metric} at each head's kept epoch): " +
          ", ".join(f"{g['lr']:g}: " + " / ".join("-" if v is None else f"{v:.4f}" for v in (g["val_loss"], g["score"]))
                    for g in grid)
          + f"; kept {heads.lrs[k]:g}, the lowest loss (epoch {epoch})")
    return Fitted(heads.grid.member(k), rows, selection, heads.lrs[k], grid)


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def fit_record(fitted: Fitted) -> dict:
    """metrics.json's record of how the kept weights were chosen: the selection, the learning rate, and a grid's
    learning rates with each head's validation score and loss."""
    return {"selection": fitted.selection, "lr": fitted.lr, **({"lr_grid": fitted.lr_grid} if fitted.lr_grid else {})}


def train_epoch(epoch: int, batches: list, loss_fn: Callable, params: dict[str, torch.Tensor], o: Optimizer,
                cfg: TrainArgs, device: torch.device, steps: StepLog, steps_per_epoch: int, sel: Selection
                ) -> tuple[torch.Tensor, list[bool]]:
    """One epoch of optimizer steps; returns each head's (summed loss, items) over all ranks, and which heads kept
    a finite loss. Losses stay on the device and reach the host only on logging steps (every cfg.log_every) and at
    the end, where a non-finite one names its epoch and step (in a grid, only if every head's is)."""
    rank, world = distributed.rank(), distributed.world()
    n_heads = len(o.heads.lrs)
    shape = (n_heads,) if o.heads.grid is not None else ()
    # the head a step row follows: the best on validation so far (before any, the grid's middle one)
    lead = best if (best := sel.best()) is not None else n_heads // 2
    losses, window, window_items, since = [], torch.zeros(shape, device=device), 0, time.perf_counter()
    bar = distributed.progress(range(0, len(batches), cfg.grad_accum), desc=f"epoch {epoch + 1}", leave=False,
                               dynamic_ncols=True)
    for step, lo in enumerate(bar):
        chunk = batches[lo:lo + cfg.grad_accum]
        items = sum(len(b) for b in chunk)
        o.opt.zero_grad(set_to_none=True)
        step_loss = torch.zeros(shape, device=device)
        for batch in chunk:
            mine = batch[rank::world]  # under torchrun, this rank's share of the batch
            if not len(mine):
                continue
            with torch.autocast(device.type, dtype=o.amp_dtype, enabled=o.amp):
                loss = loss_fn(mine)
            # weighted by size, the shares' gradients add up to the mean loss's over all the step's items; a grid's
            # heads share no parameter, so the sum gives each head its own loss's gradient
            o.scaler.scale(loss.sum() * (len(mine) / items)).backward()
            step_loss = step_loss + loss.detach().float() * len(mine)
        losses.append(step_loss)
        if world > 1:
            for p in params.values():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                distributed.all_reduce(p.grad)
        o.scaler.unscale_(o.opt)
        norms = o.heads.clip(params, cfg.max_grad_norm)
        lr = o.opt.param_groups[lead]["lr"]  # one head: lead is 0, the head's group
        o.scaler.step(o.opt)
        o.scaler.update()
        o.sched.step()
        o.ema.update(params)
        window, window_items = window + step_loss, window_items + items
        global_step = epoch * steps_per_epoch + step + 1
        if cfg.log_every and global_step % cfg.log_every == 0:  # the only host syncs of the loop
            distributed.all_reduce(window)
            now = time.perf_counter()
            row = {"step": global_step, "epoch": round(epoch + (step + 1) / steps_per_epoch, 4),
                   "loss": float(window.view(-1)[lead] / window_items), "lr": lr, "grad_norm": float(norms[lead]),
                   "examples_per_s": window_items / (now - since)}
            steps.step(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            window, window_items, since = torch.zeros(shape, device=device), 0, now
    per_step = torch.stack(losses).view(len(losses), -1) if losses else torch.zeros(1, 1, device=device)
    alive = torch.isfinite(per_step).all(0).tolist()
    if not any(alive):  # name the step where the last head's loss went non-finite
        bad_at = (~torch.isfinite(per_step)).int().argmax(0)
        head = int(bad_at.argmax())
        bad = int(bad_at[head])
        raise TrainingDiverged(f"epoch {epoch + 1}, step {bad + 1}: the training loss is {float(per_step[bad, head])}; "
                               "lower --lr / --backbone-lr (the last good checkpoint is kept: --resume continues "
                               "from it)")
    count = sum(len(b[rank::world]) for b in batches)
    seen = torch.stack([per_step.sum(0).double(), torch.full((per_step.shape[1],), float(count), device=device,
                                                             dtype=torch.float64)])
    distributed.all_reduce(seen)
    return seen, alive


def _to(tensors: dict[str, torch.Tensor] | None, device: torch.device) -> dict[str, torch.Tensor] | None:
    return None if tensors is None else {n: t.to(device) for n, t in tensors.items()}


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The generators a resumed run must continue: the CPU's, and this GPU's (dropout in LoRA runs on it)."""
    return {"rng": torch.get_rng_state(), **({"cuda_rng": torch.cuda.get_rng_state(device)}
                                             if device.type == "cuda" else {})}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["rng"].cpu())  # map_location moved it; the CPU generator takes a CPU tensor
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)


@torch.no_grad()
def assign(params: dict[str, torch.Tensor], values: dict[str, torch.Tensor]) -> None:
    for n, p in params.items():
        p.copy_(values[n])
