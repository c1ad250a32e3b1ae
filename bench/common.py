"""What bench/cpu.py and bench/gpu.py share: the Trainer peers (frozen backbone) and their hand-written
fallback, the collators, and the result table. The features-once peer is in bench/peers.py.

The peer is what users ran for their assignment: `Trainer` + `LlamaForSequenceClassification` (or
`LlamaForQuestionAnswering`) in fp32, batch 8, every parameter frozen except the head, 3 epochs. Each
step runs the whole backbone forward again; only the head gets gradients. The careful peer is the same
Trainer as a careful user sets it (`run_peer(..., batch=64, bf16=True, group_by_length=True)` on a bf16 model
from `frozen_backbone`). Trainer needs `accelerate` (requirements-bench.txt); without it the same steps run in a
hand-written loop, labelled as such.
"""
import dataclasses
import importlib.util
import math
import tempfile
import time
from collections.abc import Callable

import torch

PEER_BATCH = 8


def have_accelerate() -> bool:
    return importlib.util.find_spec("accelerate") is not None


def peer_label(mode: str, careful: bool = False) -> str:
    who = "Trainer" if mode == "trainer" else "Trainer-equivalent loop"
    return f"careful peer ({who})" if careful else f"peer ({who})"


def frozen_backbone(model: torch.nn.Module, head_name: str, dtype: torch.dtype) -> torch.nn.Module:
    """A peer's model: the backbone frozen and stored in `dtype` (the careful peer's bf16: no per-step weight casts
    under autocast), the head in fp32, so that AdamW updates it at full precision."""
    model.to(dtype)
    getattr(model, head_name).float()
    freeze_backbone(model, head_name)
    return model


def freeze_backbone(model: torch.nn.Module, head_name: str) -> int:
    """requires_grad False on everything but the head (`score` / `qa_outputs`); returns trainable parameters."""
    for name, p in model.named_parameters():
        p.requires_grad = name.split(".")[0] == head_name
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if not trainable:
        raise ValueError(f"no parameters under {head_name!r} in {type(model).__name__}")
    return trainable


def dynamic_pad(pad_id: int) -> Callable[[list[dict]], dict]:
    """What DataCollatorWithPadding does for right padding, without a tokenizer: pad input_ids/attention_mask
    to the longest item of the batch; every other key becomes a tensor as is."""
    def collate(items: list[dict]) -> dict:
        width = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, it in enumerate(items):
            ids[row, :len(it["input_ids"])] = torch.tensor(it["input_ids"])
            mask[row, :len(it["input_ids"])] = 1
        out = {"input_ids": ids, "attention_mask": mask}
        for key in items[0]:
            if key not in out:
                out[key] = torch.tensor([it[key] for it in items])
        return out
    return collate


def pad_to(ids: list[int], length: int, pad_id: int) -> dict:
    """run_qa.py's padding="max_length": ids and mask padded on the right to `length`."""
    n = min(len(ids), length)
    return {"input_ids": ids[:n] + [pad_id] * (length - n), "attention_mask": [1] * n + [0] * (length - n)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_peer(model: torch.nn.Module, train_items: list[dict], collator: Callable, *, device: torch.device,
             epochs: float = 3, max_steps: int = -1, lr: float = 1e-3, seed: int = 1, warm_steps: int = 0,
             eval_items: list[dict] | None = None, force_loop: bool = False, batch: int = PEER_BATCH,
             bf16: bool = False, group_by_length: bool = False, log=print) -> dict:
    """Train `model` (already frozen but for its head, on `device`) like Trainer does, then predict: batches of
    `batch`, bf16 autocast if `bf16`, each batch drawn from items of similar length if `group_by_length`.

    Returns mode ('trainer' or 'loop'), steps, train_s (the whole train() call), timed_s/timed_steps (after
    `warm_steps` steps, for a steady-state rate), losses (one per logging interval, in order), eval_s, logits (numpy
    array, or a tuple of them for QA) and their labels when eval_items are given. The labels come in the logits' order,
    which is not the items' when Trainer groups by length (it does so for evaluation too).
    """
    mode = "trainer" if have_accelerate() and not force_loop else "loop"
    steps = max_steps if max_steps > 0 else math.ceil(len(train_items) / batch) * math.ceil(epochs)
    log_every = max(1, steps // 10)
    fn = _run_trainer if mode == "trainer" else _run_loop
    out = fn(model, train_items, collator, device=device, epochs=epochs, max_steps=max_steps, lr=lr, seed=seed,
             warm_steps=warm_steps, eval_items=eval_items, log_every=log_every, batch=batch, bf16=bf16,
             group_by_length=group_by_length)
    out["mode"] = mode
    if out["losses"]:
        log(f"  {peer_label(mode, group_by_length)}: {out['steps']} steps, loss {out['losses'][0]:.4f} "
            f"(first {log_every} steps) -> {out['losses'][-1]:.4f} (last logged)")
    return out


def _run_trainer(model, train_items, collator, *, device, epochs, max_steps, lr, seed, warm_steps, eval_items,
                 log_every, batch, bf16, group_by_length) -> dict:
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    class Clock(TrainerCallback):
        """Wall clock at the end of step `warm_steps` and at the end of training (device synchronised)."""
        def __init__(self):
            self.warm_at = self.end_at = None

        def on_train_begin(self, args, state, control, **kw):
            self.begin_at = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == warm_steps:
                _sync(device)
                self.warm_at = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            _sync(device)
            self.end_at = time.perf_counter()

    clock = Clock()
    # transformers 5 replaced the group_by_length flag by a sampling strategy
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    grouping = ({"group_by_length": group_by_length} if "group_by_length" in names else
                {"train_sampling_strategy": "group_by_length" if group_by_length else "random"})
    with tempfile.TemporaryDirectory(prefix="peer-") as out_dir:
        targs = TrainingArguments(
            output_dir=out_dir, per_device_train_batch_size=batch, per_device_eval_batch_size=batch,
            num_train_epochs=epochs, max_steps=max_steps, learning_rate=lr, seed=seed, bf16=bf16, fp16=False,
            **grouping, eval_strategy="no", save_strategy="no", report_to=[], logging_strategy="steps",
            logging_steps=log_every,
            dataloader_num_workers=0, use_cpu=device.type == "cpu", disable_tqdm=True)
        trainer = Trainer(model=model, args=targs, train_dataset=train_items, data_collator=collator,
                          callbacks=[clock])
        trainer.remove_callback(PrinterCallback)  # losses stay in state.log_history; we print a summary
        t0 = time.perf_counter()
        trainer.train()
        _sync(device)
        train_s = time.perf_counter() - t0
        out = {"steps": trainer.state.global_step, "train_s": train_s,
               "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}
        warm_at = clock.warm_at if warm_steps else clock.begin_at
        out["timed_steps"] = out["steps"] - warm_steps
        out["timed_s"] = clock.end_at - warm_at
        if eval_items:
            t0 = time.perf_counter()
            pred = trainer.predict(eval_items)
            _sync(device)
            out["eval_s"] = time.perf_counter() - t0
            out["logits"], out["labels"] = pred.predictions, pred.label_ids
    return out


def _run_loop(model, train_items, collator, *, device, epochs, max_steps, lr, seed, warm_steps, eval_items,
              log_every, batch, bf16, group_by_length) -> dict:
    """Trainer's defaults by hand: shuffled batches (grouped by length: Trainer's own sampler), AdamW (no weight
    decay), linear decay without warmup, gradient clipping at 1.0, bf16 autocast or fp32; eval in no_grad."""
    from transformers.trainer_pt_utils import LengthGroupedSampler
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    sampler = LengthGroupedSampler(batch, dataset=train_items, generator=generator) if group_by_length else None
    loader = torch.utils.data.DataLoader(train_items, batch_size=batch, shuffle=sampler is None, sampler=sampler,
                                         collate_fn=collator, generator=generator)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    total = max_steps if max_steps > 0 else len(loader) * math.ceil(epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total))
    model.train()
    losses, window, step = [], [], 0
    warm_at = t0 = time.perf_counter()
    while step < total:
        for inputs in loader:
            with autocast:
                loss = model(**{k: v.to(device) for k, v in inputs.items()}).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            window.append(loss.detach())
            step += 1
            if step % log_every == 0:
                losses.append(torch.stack(window).mean().item())
                window = []
            if step == warm_steps:
                _sync(device)
                warm_at = time.perf_counter()
            if step >= total:
                break
    _sync(device)
    end = time.perf_counter()
    out = {"steps": step, "train_s": end - t0, "timed_steps": step - warm_steps, "timed_s": end - warm_at,
           "losses": losses}
    if eval_items:
        model.eval()
        t0 = time.perf_counter()
        chunks = []
        with torch.no_grad(), autocast:
            for lo in range(0, len(eval_items), batch):
                inputs = {k: v.to(device) for k, v in collator(eval_items[lo:lo + batch]).items() if k != "labels"}
                chunks.append(model(**inputs).logits.float().cpu())
        _sync(device)
        out["eval_s"] = time.perf_counter() - t0
        out["logits"] = torch.cat(chunks).numpy()
        out["labels"] = [it["labels"] for it in eval_items]
    return out


def fmt(v, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if v != 0 and abs(v) < 10:  # small numbers keep 3 significant digits
            return f"{v:.{max(digits, 2 - math.floor(math.log10(abs(v))))}f}"
        return f"{v:,.{digits}f}"
    return str(v)


def table(rows: list[dict], cols: list[str]) -> str:
    """A Markdown table; missing cells print as '-'."""
    cells = [[fmt(r.get(c), 2 if c in ("ratio", "accuracy", "MFU %") else 1) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])
