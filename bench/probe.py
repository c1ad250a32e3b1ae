"""How close does a trained classification head (SST-2, or any train_cls.py task) get to the best linear
classifier on the same frozen features?

    python bench/probe.py runs/sst2-full-smollm2

On the run's own cached features (same model, data, split and pooling) it fits a bias-free
L2-regularised logistic regression -- the head's exact function class -- to convergence with L-BFGS
for several strengths, picks the strength on the validation split, and prints its test accuracy
next to the head's from metrics.json.
"""
import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import model  # noqa: E402
import train_cls  # noqa: E402
from data import glue  # noqa: E402
from data.labelled import encode_labels  # noqa: E402
from data.split import stratified_split  # noqa: E402

STRENGTHS = [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]


def fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float) -> torch.Tensor:
    w = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=1000, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T, y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return w.detach()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    run = p.parse_args().run
    config = json.loads((run / "config.json").read_text())
    args = train_cls.parse_args([])
    vars(args).update(config)
    task = glue.task(args.task)
    train_all, tests = train_cls.load_data(args, task)
    test = tests["test"]
    names = train_cls.class_names(train_all, task)
    device = torch.device("cpu")
    lm, tokenizer = model.load_backbone(args.model, device, model.pick_dtype(device, args.dtype))
    x_all = train_cls.features(lm, tokenizer, train_cls.tokenize(tokenizer, train_all.texts, args.max_length),
                               args, "train").double()
    x_test = train_cls.features(lm, tokenizer, train_cls.tokenize(tokenizer, test.texts, args.max_length),
                                args, "test").double()
    y_all, y_test = torch.tensor(encode_labels(train_all, names)), torch.tensor(encode_labels(test, names))
    train_idx, val_idx = stratified_split(train_all.labels, args.val_fraction, args.seed)
    print("| L2 | validation acc | test acc |\n|---|---|---|")
    best = None
    for l2 in STRENGTHS:
        w = fit_logistic(x_all[train_idx], y_all[train_idx], len(names), l2)
        val = ((x_all[val_idx] @ w.T).argmax(1) == y_all[val_idx]).double().mean().item()
        acc = ((x_test @ w.T).argmax(1) == y_test).double().mean().item()
        print(f"| {l2:g} | {val:.4f} | {acc:.4f} |")
        best = max(best or (val, l2, acc), (val, l2, acc))
    head = json.loads((run / "metrics.json").read_text())["metrics"]["after"]["accuracy"]
    print(f"\nlogistic regression (L2 {best[1]:g}, chosen on validation): test accuracy {best[2]:.4f}")
    print(f"trained head ({run}): test accuracy {head:.4f}; gap {100 * (best[2] - head):+.2f} points")


if __name__ == "__main__":
    main()
