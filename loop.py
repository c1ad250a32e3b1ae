"""The training loop: AdamW with warmup and a cosine or linear schedule, gradient accumulation, torchrun
gradient averaging, weight averaging (EMA), a checkpoint per epoch, and exact resume."""
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import distributed
from modes import check_same, trained_parameters
from rundir import RunDir
from tables import print_row


@dataclass
class TrainArgs:
    epochs: int = 3
    lr: float = 1e-3  # the head's
    backbone_lr: float = 1e-5  # what trains in the backbone, if anything
    weight_decay: float = 0.0
    warmup: float = 0.1  # fraction of the steps
    schedule: str = "cosine"  # or "linear"
    max_grad_norm: float = 1.0
    ema: float = 0.97  # weight averaging decay (0: off)
    grad_accum: int = 1  # batches per optimizer step
    resume: bool = False


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


def fit(head: nn.Module, backbone: nn.Module, epoch_batches: Callable[[int], list], loss_fn: Callable,
        evaluate: Callable[[], dict], cfg: TrainArgs, run: RunDir, device: torch.device, amp: bool) -> list[dict]:
    """Train the head (at cfg.lr) and whatever requires grad in the backbone (at cfg.backbone_lr) for cfg.epochs;
    after each epoch log a row and checkpoint, so an interrupted run (cfg.resume) loses at most one epoch.

    epoch_batches(epoch) gives that epoch's (seeded, shuffled) batches, cfg.grad_accum of them per optimizer step;
    loss_fn(batch) the mean loss over the batch's items; evaluate() the validation row. With cfg.ema the averaged
    weights are evaluated and left in place at the end. amp: autocast the forward (a training backbone on CUDA).
    The modules end in eval mode whatever happened, so every later evaluation runs without dropout."""
    parts = nn.ModuleDict({"head": head, "backbone": backbone})
    params = trained_parameters(backbone, head)
    lrs = {"head": cfg.lr, "backbone": cfg.backbone_lr}
    groups = [{"params": group, "lr": lr} for part, lr in lrs.items()
              if (group := [p for n, p in params.items() if n.startswith(part + ".")])]
    fused = device.type == "cuda" and all(p.is_cuda for p in params.values())  # one kernel for the whole step
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, fused=fused or None)
    steps_per_epoch = math.ceil(len(epoch_batches(0)) / cfg.grad_accum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps_per_epoch * cfg.epochs, cfg.warmup, cfg.schedule))
    amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    ema, rows, first = EMA(cfg.ema), [], 0
    # rank 0's checkpoint on every rank (other machines need not hold the run folder), sent from the CPU: a CUDA
    # tensor pickled on rank 0 unpickles onto rank 0's GPU in every rank; each part moves to its device below
    state = distributed.from_main(lambda: run.load_checkpoint(torch.device("cpu"))) if cfg.resume else None
    if state is not None:
        check_same(state["trained"], params, run.file("ckpt.pt"))
        assign(params, state["trained"])
        for obj, key in ((opt, "opt"), (sched, "sched"), (scaler, "scaler")):
            obj.load_state_dict(state[key])
        set_rng_state(state, device)
        ema.state, rows, first = _to(state["ema"], device), state["rows"], state["epoch"]
        print(f"resumed from {run.file('ckpt.pt')} after epoch {first}")
        if ema.state is not None and first >= cfg.epochs:  # a finished run: keep the averaged weights it ended with
            assign(params, ema.state)
    for epoch in range(first, cfg.epochs):
        parts.train()
        seen = train_epoch(epoch, epoch_batches(epoch), loss_fn, params, opt, sched, scaler, ema, cfg, amp_dtype,
                           amp, device)
        parts.eval()
        trained = {n: p.detach().clone() for n, p in params.items()}
        if ema.state is not None:  # evaluate (and keep, if this is the last epoch) the averaged weights
            assign(params, ema.state)
        row = {"epoch": epoch + 1, "train_loss": float(seen[0] / seen[1].clamp(min=1)), **evaluate()}
        rows.append(row)
        print_row(row, header=epoch == first)
        if distributed.is_main():
            run.save_epoch(rows, {"trained": trained, "opt": opt.state_dict(), "sched": sched.state_dict(),
                                  "scaler": scaler.state_dict(), "ema": ema.state, **rng_state(device),
                                  "rows": rows, "epoch": epoch + 1})
        if epoch + 1 < cfg.epochs:
            assign(params, trained)
    parts.eval()
    return rows


def train_epoch(epoch, batches, loss_fn, params, opt, sched, scaler, ema, cfg, amp_dtype, amp, device
                ) -> torch.Tensor:
    """One epoch of optimizer steps; returns (summed loss, items) over all ranks. Losses stay on the device (no
    host sync per step) and are checked once at the end: a non-finite one names its epoch and step."""
    rank, world = distributed.rank(), distributed.world()
    losses = []
    for step, lo in enumerate(distributed.progress(range(0, len(batches), cfg.grad_accum), desc=f"epoch {epoch + 1}",
                                                    leave=False, dynamic_ncols=True)):
        chunk = batches[lo:lo + cfg.grad_accum]
        items = sum(len(b) for b in chunk)
        opt.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), device=device)
        for batch in chunk:
            mine = batch[rank::world]  # under torchrun, this rank's share of the batch
            if not len(mine):
                continue
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                loss = loss_fn(mine)
            # weighted by size, the shares' gradients add up to the mean loss's over all the step's items
            scaler.scale(loss * (len(mine) / items)).backward()
            step_loss = step_loss + loss.detach().float() * len(mine)
        losses.append(step_loss)
        if world > 1:
            for p in params.values():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                distributed.all_reduce(p.grad)
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params.values(), cfg.max_grad_norm)
        scaler.step(opt)
        scaler.update()
        sched.step()
        ema.update(params)
    per_step = torch.stack(losses) if losses else torch.zeros(1, device=device)
    if not torch.isfinite(per_step).all():
        bad = int((~torch.isfinite(per_step)).nonzero()[0])
        raise TrainingDiverged(f"epoch {epoch + 1}, step {bad + 1}: the training loss is {float(per_step[bad])}; "
                               "lower --lr / --backbone-lr (the last good checkpoint is kept: --resume continues "
                               "from it)")
    count = sum(len(b[rank::world]) for b in batches)
    seen = torch.stack([per_step.sum().double(), torch.tensor(float(count), device=device, dtype=torch.float64)])
    distributed.all_reduce(seen)
    return seen


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
