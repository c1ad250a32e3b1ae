"""What both scripts share: length-sorted backbone passes, the on-disk feature cache, and the head loop."""
import argparse
import atexit
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import load_file, save_file
from tqdm import tqdm

import lora
from data.fetch import cache_dir, write_atomic


def common_args(p: argparse.ArgumentParser, lr: float, batch_size: int) -> None:
    """Flags both scripts share: model and precision, the head's optimiser, run folder, export and push."""
    from model import DEFAULT_MODEL
    p.add_argument("--model", default=DEFAULT_MODEL, help="Hub id, local folder, or 'smollm2-135m' (embedded)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--val-fraction", type=float, default=0.2, help="held out of the training data, stratified")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of steps")
    p.add_argument("--schedule", choices=["linear", "cosine"], default="cosine")
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--ema", type=float, default=0.97, help="weight averaging decay for the head (0: off)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto", help="backbone compute dtype")
    p.add_argument("--max-tokens", type=int, help="tokens per backbone batch, padding included (default: 32768 on "
                   "CUDA, where bigger batches keep the GPU busy; 8192 elsewhere)")
    p.add_argument("--compile", action="store_true", help="torch.compile the frozen feature pass: ~50 s to compile, "
                   "then ~1.3x faster (H200, bench/RESULTS.md); pays for SQuAD-size data, not for SST-2")
    p.add_argument("--zero-shot", action="store_true", help="also score the LM's own prompted answers")
    p.add_argument("--count-params-only", action="store_true", help="print the parameter analysis from the config")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--run-name")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    p.add_argument("--export", help="write a full transformers checkpoint to this folder")
    p.add_argument("--merge", action="store_true", help="with --lora-rank: fold the adapters into the exported weights")
    p.add_argument("--push-to-hub", metavar="USER/REPO")
    p.add_argument("--private", action="store_true")
    p.add_argument("--push-full", action="store_true", help="push the full export instead of the head")
    p.add_argument("--grad-accum", type=int, default=1, metavar="N", help="micro-batches per optimizer step")
    t = p.add_argument_group("training the backbone too (default: the head alone, on cached features)")
    mode = t.add_mutually_exclusive_group()
    mode.add_argument("--lora-rank", type=int, default=0, metavar="R", help="low-rank adapters on --lora-targets")
    mode.add_argument("--unfreeze-last", type=int, default=0, metavar="K",
                      help="train the top K decoder blocks and the final norm")
    t.add_argument("--lora-alpha", type=float, help="the adapters' scale is alpha/R (default: 2R)")
    t.add_argument("--lora-dropout", type=float, default=0.0)
    t.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj",
                   help="comma list of Linear layer names (e.g. also gate_proj,up_proj,down_proj)")
    t.add_argument("--backbone-lr", type=float, help="learning rate of what trains in the backbone (--lr stays "
                   "the head's); default 1e-3 for LoRA, 1e-5 for --unfreeze-last")
    t.add_argument("--grad-checkpoint", action="store_true",
                   help="recompute each decoder block's activations in backward: far less memory, ~1/3 more time")


def parse(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse the flags, refuse contradictions and fill the defaults that depend on the training mode."""
    args = p.parse_args(argv)
    if min(args.grad_accum - 1, args.lora_rank, args.unfreeze_last) < 0:
        p.error("--grad-accum must be at least 1, --lora-rank and --unfreeze-last at least 0")
    if args.lora_rank and args.export and not args.merge:
        p.error("--export with --lora-rank needs --merge: a transformers checkpoint holds no adapters, so they are "
                "folded into the weights (the run folder's adapters.safetensors keeps them apart)")
    if args.lora_rank and args.lora_alpha is None:
        args.lora_alpha = 2.0 * args.lora_rank
    if args.backbone_lr is None:
        args.backbone_lr = 1e-3 if args.lora_rank else 1e-5
    if args.max_tokens is None:
        from model import pick_device
        args.max_tokens = 32768 if pick_device(args.device).type == "cuda" else 8192
    return args


def setup_distributed(device: torch.device) -> None:
    """Under torchrun (RANK set): join the process group, NCCL for GPUs and gloo for CPUs. Every rank then runs
    the same script on the same data; feature extraction (cached_features) and each training batch (fit) are
    split between them. Only rank 0 prints and writes files."""
    if "RANK" not in os.environ or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    atexit.register(dist.destroy_process_group)
    if dist.get_rank() != 0:
        sys.stdout = open(os.devnull, "w")


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def progress(*args, **kwargs) -> tqdm:
    """tqdm on rank 0; the other ranks' bars would only repeat it."""
    return tqdm(*args, **kwargs) if is_main() else tqdm(*args, disable=True, **kwargs)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def shuffled(batches: list, seed: int) -> list:
    """The same batches in a seeded order: length-sorted batches stay tight, yet every epoch differs."""
    perm = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed))
    return [batches[i] for i in perm]


def length_batches(lengths: list[int], max_tokens: int, max_batch: int = 512,
                   max_padding: float = 0.05) -> list[list[int]]:
    """Group indices by length: a padded batch costs at most max_tokens, and at most max_padding of it
    is padding (a batch closes early rather than mixing short and long items)."""
    batches, current, longest, real = [], [], 0, 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        grown = max(longest, lengths[i])
        padded = grown * (len(current) + 1)
        if current and (padded > max_tokens or len(current) == max_batch
                        or padded - real - lengths[i] > max_padding * padded):
            batches.append(current)
            current, grown, real = [], lengths[i], 0
        current.append(i)
        longest, real = grown, real + lengths[i]
    if current:
        batches.append(current)
    return batches


def pad_rows(items: list[torch.Tensor], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item (n_i, H) tensors (cached states or features) right-padded with zeros into (B, T, H) on `device`,
    and their (B, T) mask, as pad_batch gives for token ids."""
    padded = torch.nn.utils.rnn.pad_sequence([t.to(device) for t in items], batch_first=True)
    lengths = torch.tensor([len(t) for t in items], device=device)
    return padded, (torch.arange(padded.shape[1], device=device)[None] < lengths[:, None]).long()


def pad_batch(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and their mask, built in a few vectorised ops (not one copy per row)."""
    lengths = torch.tensor([len(s) for s in seqs])
    mask = (torch.arange(int(lengths.max()))[None] < lengths[:, None]).long()
    ids = torch.full(mask.shape, pad_id, dtype=torch.long)
    ids[mask.bool()] = torch.tensor([t for s in seqs for t in s], dtype=torch.long)
    pin = device.type == "cuda"
    return (ids.pin_memory() if pin else ids).to(device, non_blocking=pin), \
           (mask.pin_memory() if pin else mask).to(device, non_blocking=pin)


def backbone_passes(backbone, seqs: list[list[int]], pad_id: int, max_tokens: int, desc: str,
                    order: list[list[int]] | None = None) -> Iterable[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Yield (indices, last hidden state, mask) per length-sorted batch, with a tok/s progress bar.

    The batches are right-padded and the model is causal, so no real token ever attends to a pad: the
    backbone runs without an attention mask, which lets SDPA take its fused causal (flash) kernel."""
    device = next(backbone.parameters()).device
    batches = order if order is not None else length_batches([len(s) for s in seqs], max_tokens, max_batch=4096)
    total = sum(len(seqs[i]) for b in batches for i in b)
    start = time.perf_counter()
    with progress(total=total, desc=desc, unit="tok", unit_scale=True, dynamic_ncols=True) as bar:
        for batch in batches:
            ids, mask = pad_batch([seqs[i] for i in batch], pad_id, device)
            with torch.inference_mode():
                hidden = backbone(input_ids=ids).last_hidden_state
            yield batch, hidden, mask
            bar.update(sum(len(seqs[i]) for i in batch))  # counted on the host: no device sync
            bar.set_postfix(tok_s=f"{bar.n / (time.perf_counter() - start):,.0f}")


_COMPILED: "weakref.WeakKeyDictionary[torch.nn.Module, Callable]" = weakref.WeakKeyDictionary()


def feature_module(backbone: torch.nn.Module, args) -> Callable:
    """The frozen backbone as feature passes run it: with --compile, compiled once per process for dynamic shapes
    (batches differ in size and length). The module itself stays as it is, so its weights keep their names."""
    if not args.compile:
        return backbone
    if backbone not in _COMPILED:
        _COMPILED[backbone] = torch.compile(backbone, dynamic=True)
    return _COMPILED[backbone]


def backbone_features(backbone, seqs: list[list[int]], pad_id: int, max_tokens: int, desc: str,
                      pick: Callable[[list[int], torch.Tensor, torch.Tensor], list[torch.Tensor]]
                      ) -> Iterable[tuple[list[int], list[torch.Tensor]]]:
    """Yield (indices, per-item host tensors), where pick(indices, hidden, mask) selects what to keep of a batch.

    On CUDA each batch's picks travel to pinned host memory asynchronously and are yielded one batch late, after
    the next batch's forward is queued: the copy overlaps compute and the GPU never waits for the host."""
    pending = None
    for batch, hidden, mask in backbone_passes(backbone, seqs, pad_id, max_tokens, desc):
        picked = pick(batch, hidden, mask)
        sizes = [len(t) for t in picked] if picked[0].dim() > 1 else None
        packed = torch.cat(picked) if sizes else torch.stack(picked)  # a fresh tensor: hidden can be freed
        if packed.is_cuda:
            host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
            host.copy_(packed, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        else:
            host, done = packed, None
        if pending:
            yield _unpack(*pending)
        pending = batch, host, sizes, done
    if pending:
        yield _unpack(*pending)


def trunk_states(lm, seqs: list[list[int]], pad_id: int, args, name: str) -> list[torch.Tensor]:
    """--unfreeze-last K: the states entering the top K blocks, every position, cached on disk. Nothing below
    those blocks trains, so each epoch runs only the top (model.top) on them."""
    from model import Trunk
    k = args.unfreeze_last
    path = feature_cache_path(args, lm, seqs, trunk=len(lm.model.layers) - k)

    def compute(idx):
        for batch, feats in backbone_features(Trunk(lm.model, k), [seqs[i] for i in idx], pad_id, args.max_tokens,
                                              f"trunk {name}", lambda b, hidden, _: [hidden[r, :len(seqs[idx[i]])]
                                                                                     for r, i in enumerate(b)]):
            yield [idx[i] for i in batch], feats
    return cached_features(path, seqs, compute)


def _unpack(batch, host, sizes, done):
    if done is not None:
        done.synchronize()
    return batch, list(host.split(sizes) if sizes else host.unbind(0))


def cache_key(**parts) -> str:
    """Hash of everything that determines the features: model, its weights' identity, data, length, pooling."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def feature_cache_path(args, lm, seqs: list[list[int]], **more) -> Path:
    """Where the features of these token sequences live: keyed by model, its weights, dtype and data (+ more)."""
    from model import resolve_model
    path = resolve_model(args.model)
    key = cache_key(model=path, weights=model_fingerprint(path), dtype=str(lm.dtype), data=data_fingerprint(seqs),
                    **more)
    return cache_dir() / "features" / f"{key}.safetensors"


def model_fingerprint(path: str) -> str:
    """Identity of a model's weights: for a Hub id the commit of the snapshot in the Hub cache (what
    from_pretrained loaded: a new revision of the repo gets new features), file sizes and mtimes for local folders."""
    folder = Path(path)
    if not folder.is_dir():
        snapshot = try_to_load_from_cache(path, "config.json")
        return f"{path}@{Path(snapshot).parent.name}" if isinstance(snapshot, str) else path
    files = sorted(f for f in folder.iterdir() if f.suffix in (".safetensors", ".json", ".bin"))
    return ";".join(f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in files)


def data_fingerprint(seqs: list[list[int]]) -> str:
    h = hashlib.sha256()
    for s in seqs:
        h.update(np.asarray(s, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()


def cached_features(path: Path, seqs: list[list[int]], compute: Callable[[list[list[int]]], Iterable],
                    chunk: int = 4096) -> list[torch.Tensor]:
    """Features per sequence, computed once and kept in `path` (safetensors).

    Work is done in length-sorted chunks, each saved as it finishes, so an interrupted extraction
    resumes where it stopped. `compute(indices)` yields (indices, per-item feature tensors). Under torchrun
    every rank computes its share of each chunk (every world-th sequence) and saves it; once all shares are on
    disk (one node, one disk) every rank reads the others', and rank 0 writes the merged file.
    """
    if path.exists():
        return unflatten(load_file(path))
    parts = path.with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    feats: list[torch.Tensor | None] = [None] * len(seqs)
    shares = [(parts / f"{c:05d}.{r}-of-{world()}.safetensors", order[lo:lo + chunk][r::world()])
              for c, lo in enumerate(range(0, len(order), chunk)) for r in range(world())]
    for part, idx in shares[rank()::world()]:
        if not idx:
            continue
        if part.exists():
            got = unflatten(load_file(part))
        else:
            found = {}
            for batch, batch_feats in compute(idx):
                found.update(zip(batch, batch_feats))
            got = [found[i] for i in idx]
            save_atomic(flatten(got), part)
        for i, f in zip(idx, got):
            feats[i] = f
    barrier()
    for part, idx in shares:  # the other ranks' shares
        if idx and feats[idx[0]] is None:
            for i, f in zip(idx, unflatten(load_file(part))):
                feats[i] = f
    barrier()  # every rank has read every share before rank 0 removes them
    if is_main():
        save_atomic(flatten(feats), path)
        shutil.rmtree(parts)
    return feats


def flatten(items: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    # Variable-length items (QA windows) and fixed ones (pooled vectors) share one flat layout.
    shapes = torch.tensor([t.shape[0] if t.dim() > 1 else 0 for t in items])
    flat = torch.cat([t.reshape(-1, t.shape[-1]) for t in items]).contiguous()
    return {"flat": flat, "lengths": shapes}


def unflatten(d: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    lengths = d["lengths"].tolist()
    if not any(lengths):
        return list(d["flat"].unbind(0))
    return list(d["flat"].split(lengths))


def save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, tmp)
    os.replace(tmp, path)


def lr_lambda(total_steps: int, warmup: float, schedule: str) -> Callable[[int], float]:
    warm = max(1, int(total_steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else max(0.0, 1 - progress)
    return factor


def fit(head: torch.nn.Module, epoch_batches: Callable[[int], list], loss_fn: Callable, evaluate: Callable[[], dict],
        args, run_dir: Path, device: torch.device, backbone: torch.nn.Module | None = None) -> list[dict]:
    """Train the head (at args.lr), and whatever requires grad in the backbone (LoRA adapters, unfrozen blocks:
    at args.backbone_lr), for args.epochs; after each epoch log a row and checkpoint, so --resume loses at most one.

    epoch_batches(epoch) gives that epoch's (seeded, shuffled) batches, args.grad_accum of them per optimizer
    step; loss_fn(batch) the mean loss over the batch's len(batch) items; evaluate() the validation row (loss
    and task metrics). With args.ema > 0 the weights evaluated, and left in place at the end, are an exponential
    moving average: on raw LLM features (large, uncentred outlier dimensions) the last AdamW steps otherwise leave
    a noisy decision bias.
    """
    parts = torch.nn.ModuleDict({"head": head, **({"backbone": backbone} if backbone is not None else {})})
    params = {n: p for n, p in parts.named_parameters() if p.requires_grad}
    lrs = {"head": args.lr, "backbone": args.backbone_lr}
    groups = [{"params": group, "lr": lr} for part, lr in lrs.items()
              if (group := [p for n, p in params.items() if n.startswith(part + ".")])]
    fused = device.type == "cuda" and all(p.is_cuda for p in params.values())  # one kernel for the whole step
    opt = torch.optim.AdamW(groups, weight_decay=args.weight_decay, fused=fused or None)
    steps_per_epoch = math.ceil(len(epoch_batches(0)) / args.grad_accum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps_per_epoch * args.epochs, args.warmup, args.schedule))
    # AMP is for a backbone that trains; a head on cached features is a few small fp32 matmuls, where autocast
    # would only add casts (and round the features) at every step
    amp = device.type == "cuda" and any(n.startswith("backbone.") for n in params)
    amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    ema: dict[str, torch.Tensor] | None = None  # the first update copies the weights, as AveragedModel does
    ckpt, log = run_dir / "ckpt.pt", run_dir / "log.jsonl"
    rows, first = [], 0
    if getattr(args, "resume", False) and ckpt.exists():
        # onto this rank's device, whichever device wrote it (another GPU, or a GPU run resumed on a CPU)
        state = torch.load(ckpt, map_location=device, weights_only=False)
        lora.check_same(state["trained"], params, ckpt)
        assign(params, state["trained"])
        for obj, key in ((opt, "opt"), (sched, "sched"), (scaler, "scaler")):
            obj.load_state_dict(state[key])
        set_rng_state(state, device)
        ema, rows, first = state["ema"], state["rows"], state["epoch"]
        print(f"resumed from {ckpt} after epoch {first}")
        if ema is not None and first >= args.epochs:  # a finished run: keep the averaged weights it ended with
            assign(params, ema)
    for epoch in range(first, args.epochs):
        parts.train()
        batches, total, count = epoch_batches(epoch), 0.0, 0
        for lo in progress(range(0, len(batches), args.grad_accum), desc=f"epoch {epoch + 1}", leave=False,
                       dynamic_ncols=True):
            step = batches[lo:lo + args.grad_accum]
            items = sum(len(b) for b in step)
            opt.zero_grad(set_to_none=True)
            for batch in step:
                mine = batch[rank()::world()]  # under torchrun, this rank's share of the batch
                if not len(mine):
                    continue
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                    loss = loss_fn(mine)
                # weighted by size, the shares' gradients add up to the mean loss's over all the step's items
                scaler.scale(loss * (len(mine) / items)).backward()
                total, count = total + loss.detach().float() * len(mine), count + len(mine)  # no sync per step
            if world() > 1:
                for p in params.values():
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    dist.all_reduce(p.grad)
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params.values(), args.max_grad_norm)
            scaler.step(opt)
            scaler.update()
            sched.step()
            if args.ema and ema is None:
                ema = {n: p.detach().clone() for n, p in params.items()}
            elif args.ema:
                for n, p in params.items():
                    ema[n].lerp_(p.detach(), 1 - args.ema)
        parts.eval()
        trained = {n: p.detach().clone() for n, p in params.items()}
        if ema is not None:  # evaluate (and keep, if this is the last epoch) the averaged weights
            assign(params, ema)
        seen = torch.tensor([float(total), count], dtype=torch.float64, device=device)
        if world() > 1:
            dist.all_reduce(seen)
        row = {"epoch": epoch + 1, "train_loss": float(seen[0] / seen[1].clamp(min=1)), **evaluate()}
        rows.append(row)
        print_row(row, header=epoch == first)
        if is_main():
            write_atomic(log, "".join(json.dumps(r) + "\n" for r in rows))
            torch.save({"trained": trained, "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "scaler": scaler.state_dict(), "ema": ema, **rng_state(device), "rows": rows,
                        "epoch": epoch + 1}, ckpt.with_suffix(".tmp"))
            os.replace(ckpt.with_suffix(".tmp"), ckpt)
        if epoch + 1 < args.epochs:
            assign(params, trained)
    parts.eval()  # also when a finished run resumes and no epoch ran: evaluation never sees dropout
    return rows


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


def print_row(row: dict, header: bool) -> None:
    if header:
        print(" | ".join(f"{k:>10}" for k in row))
    print(" | ".join(f"{v:>10.4f}" if isinstance(v, float) else f"{v:>10}" for v in row.values()))


def table(rows: dict[str, dict], keys: list[str]) -> str:
    """A Markdown table: one row per named result (e.g. before / zero-shot / after)."""
    lines = ["| | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, m in rows.items():
        cells = [f"{m[k]:.4f}" if isinstance(m.get(k), float) else str(m.get(k, "")) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def publish(run_dir: Path, info: dict, args, export: Path | None) -> int:
    """Write the run's metrics/config/card, then push the head (or the full export) if asked."""
    import hub
    write_atomic(run_dir / "metrics.json", json.dumps(info, indent=1) + "\n")
    write_atomic(run_dir / "config.json", json.dumps(vars(args), indent=1) + "\n")
    hub.save_card_info(run_dir, info)
    print(f"artifacts in {run_dir}/" + (f"; full checkpoint in {export}/" if export else ""))
    if not args.push_to_hub:
        return 0
    if args.push_full and export is None:
        print("error: --push-full uploads the --export folder; pass --export DIR too")
        return 2
    folder = export if args.push_full else run_dir
    try:
        print(f"pushed to {hub.push_folder(folder, args.push_to_hub, args.private, card_info=info)}")
    except hub.PushError as e:
        print(f"error: push failed: {e}")
        return 1
    return 0
