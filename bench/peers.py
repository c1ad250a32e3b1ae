"""The features-once peer of bench/cpu.py and bench/gpu.py: what a careful engineer writes with plain transformers
instead of a Trainer, for a frozen backbone.

The bare model (`AutoModel`, bf16 where the hardware has it) runs once over the data under `torch.inference_mode()`,
in batches of 64 items sorted by length, right-padded with an attention mask. Then:
  SST-2  the last real token's hidden state is the sentence's vector, and a bias-free L2 logistic regression (the
         head's function class) is fitted on the stored vectors with L-BFGS (bench/probe.py's fit), its strength
         picked on the validation split (the same 80:20 split as ours);
  SQuAD  the hidden states of each window's context and null rows are stored, and a linear span head (start/end,
         as LlamaForQuestionAnswering's) trains on them with AdamW in shuffled batches of 32 for the same epochs.
"""
import time
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from bench import common
from bench.probe import STRENGTHS, fit_logistic
from data.split import stratified_split

BATCH = 64


def forward_batches(backbone, seqs: list[list[int]], pad_id: int, batch: int = BATCH
                    ) -> Iterable[tuple[list[int], torch.Tensor]]:
    """(indices, last hidden state) per batch of `batch` length-sorted items, as plain transformers runs it: padded
    to the batch's longest, with an attention mask, in inference mode."""
    device = next(backbone.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    collate = common.dynamic_pad(pad_id)
    for lo in range(0, len(order), batch):
        idx = order[lo:lo + batch]
        inputs = {k: v.to(device) for k, v in collate([{"input_ids": seqs[i]} for i in idx]).items()}
        with torch.inference_mode():
            yield idx, backbone(**inputs).last_hidden_state


def last_token_features(backbone, seqs: list[list[int]], pad_id: int) -> torch.Tensor:
    """(N, H) fp32: each sequence's hidden state at its last token."""
    out = torch.empty(len(seqs), backbone.config.hidden_size)
    for idx, hidden in forward_batches(backbone, seqs, pad_id):
        last = torch.tensor([len(seqs[i]) - 1 for i in idx], device=hidden.device)
        out[idx] = hidden[torch.arange(len(idx), device=hidden.device), last].float().cpu()
    return out


def classify(x_all: torch.Tensor, y_all: torch.Tensor, x_test: torch.Tensor, train_idx: list[int],
             val_idx: list[int]) -> dict:
    """L-BFGS logistic regressions for bench/probe.py's strengths on the train rows; the one best on validation
    scores the test rows. The fits run in fp64 on the vectors' device (L-BFGS to convergence)."""
    x_all, x_test = x_all.double(), x_test.double()
    n_classes = int(y_all.max()) + 1
    best = None
    for l2 in STRENGTHS:
        with x_all.device:  # fit_logistic creates its weights on the default device
            w = fit_logistic(x_all[train_idx], y_all[train_idx], n_classes, l2)
        val = ((x_all[val_idx] @ w.T).argmax(1) == y_all[val_idx]).double().mean().item()
        if best is None or val > best[0]:
            best = val, l2, w
    val, l2, w = best
    return {"val_accuracy": val, "l2": l2, "test_pred": (x_test @ w.T).argmax(1)}


def features_once_cls(backbone, pad_id: int, train_seqs: list[list[int]], y_train: list[int],
                      test_seqs: list[list[int]], y_test: list[int], val_fraction: float, seed: int) -> dict:
    """SST-2 once the model is loaded: the vectors of both splits, the fits (on the backbone's device), and the
    test accuracy of the one chosen; the train rows split into train/validation as ours splits them."""
    device = next(backbone.parameters()).device
    t0 = time.perf_counter()
    x_all, x_test = (last_token_features(backbone, s, pad_id).to(device) for s in (train_seqs, test_seqs))
    feature_s = time.perf_counter() - t0
    train_idx, val_idx = stratified_split(y_train, val_fraction, seed)
    fit = classify(x_all, torch.tensor(y_train, device=device), x_test, train_idx, val_idx)
    accuracy = (fit.pop("test_pred") == torch.tensor(y_test, device=device)).double().mean().item()
    return {**fit, "accuracy": accuracy, "feature_s": feature_s, "fit_s": time.perf_counter() - t0 - feature_s}


def span_rows(backbone, seqs: list[list[int]], starts: list[int], pad_id: int) -> list[torch.Tensor]:
    """Per window, its rows from `starts[i]` (the context, then the null token) to its end, bf16 on the host."""
    rows: list[torch.Tensor | None] = [None] * len(seqs)
    for idx, hidden in forward_batches(backbone, seqs, pad_id):
        for r, i in enumerate(idx):
            rows[i] = hidden[r, starts[i]:len(seqs[i])].cpu()
    return rows


def train_span_head(rows: list[torch.Tensor], start_rows: list[int], end_rows: list[int], *, epochs: int,
                    lr: float, seed: int, batch: int = 32, device=None) -> list[float]:
    """A Linear(H, 2) start/end head on stored rows, AdamW in shuffled batches; the mean loss of each epoch."""
    device = device or rows[0].device
    torch.manual_seed(seed)
    head = torch.nn.Linear(rows[0].shape[-1], 2).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=lr)
    targets = torch.tensor([start_rows, end_rows], device=device)
    losses = []
    for epoch in range(epochs):
        total = torch.zeros((), device=device)
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed + epoch))
        for b in order.split(batch):
            x = torch.nn.utils.rnn.pad_sequence([rows[i] for i in b], batch_first=True).to(device).float()
            n = torch.tensor([len(rows[i]) for i in b], device=device)
            pad = torch.arange(x.shape[1], device=device)[None] >= n[:, None]
            logits = head(x).masked_fill(pad[..., None], float("-inf"))
            loss = (F.cross_entropy(logits[..., 0], targets[0, b]) + F.cross_entropy(logits[..., 1], targets[1, b])) / 2
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            total += loss.detach() * len(b)
        losses.append(total.item() / len(rows))
    return losses
