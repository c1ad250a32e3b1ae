"""Train a sentiment head (SST-2 by default) on a frozen Llama; evaluate before, zero-shot and after.

    python train_cls.py --epochs 3                                   # Llama-3.2-1B on GLUE SST-2
    python train_cls.py --model smollm2-135m --data-dir data/samples/sst2   # offline demo
    python train_cls.py --lora-rank 8                                # LoRA adapters train with the head

The frozen backbone runs once per sentence: pooled features are cached on disk and every epoch trains
the head on them. With --unfreeze-last K the cache holds the states below the top K blocks, and every step
runs only those; with --lora-rank every step runs the whole backbone.
"""
import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import engine
import lora
import model
from data.fetch import DataUnavailable, fetch_file
from data.labelled import DataError, encode_labels, label_names, read_labelled
from data.split import stratified_split
from metrics.classification import classification_metrics

ZERO_SHOT_PROMPT = "{sentence}\nQuestion: Is this sentence positive or negative?\nAnswer:"
ZERO_SHOT_WORDS = {"0": " negative", "1": " positive", "negative": " negative", "positive": " positive"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    engine.common_args(p, lr=5e-3, batch_size=16)
    p.add_argument("--data-dir", help="folder with train.tsv and dev.tsv (GLUE layout)")
    p.add_argument("--train-file", help="labelled training data (.tsv/.csv/.jsonl)")
    p.add_argument("--eval-file", help="labelled test data (.tsv/.csv/.jsonl); GLUE dev by default")
    p.add_argument("--text-column", default="sentence")
    p.add_argument("--label-column", default="label")
    p.add_argument("--max-length", type=int, default=256, help="longer sentences are truncated (and counted)")
    p.add_argument("--pooling", choices=["last", "mean"], default="last")
    args = engine.parse(p, argv)
    if args.pooling == "mean" and (args.export or args.push_full):
        p.error("--pooling mean cannot be exported: LlamaForSequenceClassification reads the last token, so the "
                "export would disagree with the run; use --pooling last, or keep the run folder's head")
    return args


def load_data(args):
    """(train, test) Labelled sets from flags, or GLUE SST-2 fetched into the cache."""
    if args.data_dir:
        train_path, test_path = Path(args.data_dir) / "train.tsv", Path(args.data_dir) / "dev.tsv"
    else:
        hint = " (offline? try `--model smollm2-135m --data-dir data/samples/sst2`)"
        try:
            train_path = args.train_file or fetch_file("sst2_train")
            test_path = args.eval_file or fetch_file("sst2_dev")
        except DataUnavailable as e:
            raise DataUnavailable(str(e) + hint) from None
    return (read_labelled(train_path, args.text_column, args.label_column),
            read_labelled(test_path, args.text_column, args.label_column))


def tokenize(tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], int]:
    ids = tokenizer(texts, add_special_tokens=True)["input_ids"]
    truncated = sum(len(s) > max_length for s in ids)
    return [s[:max_length] for s in ids], truncated


def features(lm, tokenizer, seqs: list[list[int]], args, name: str, cache: bool = True) -> torch.Tensor:
    """Pooled last hidden states of the backbone as it is, kept on disk unless cache is off (a training backbone)."""
    backbone = engine.feature_module(lm.model, args) if cache else lm.model  # a training backbone changes

    def compute(idx):
        for batch, feats in engine.backbone_features(backbone, [seqs[i] for i in idx], tokenizer.pad_token_id,
                                                     args.max_tokens, f"features {name}",
                                                     lambda b, hidden, mask: model.pool(hidden, mask, args.pooling)
                                                     .float().unbind(0)):
            yield [idx[i] for i in batch], feats

    if not cache:
        found = {i: f for batch, feats in compute(range(len(seqs))) for i, f in zip(batch, feats)}
        return torch.stack([found[i] for i in range(len(seqs))])
    path = engine.feature_cache_path(args, lm, seqs, pooling=args.pooling)
    return torch.stack(engine.cached_features(path, seqs, compute))


def zero_shot(lm, tokenizer, texts: list[str], names: list[str], args) -> torch.Tensor:
    """Class log-likelihoods of the LM's answer word after lm-eval-harness's SST-2 prompt."""
    missing = [n for n in names if n not in ZERO_SHOT_WORDS]
    if missing:
        raise DataError(f"--zero-shot knows SST-2's labels (0/1 or negative/positive), not {missing}")
    words = [tokenizer(ZERO_SHOT_WORDS[n], add_special_tokens=False)["input_ids"] for n in names]
    prompts, _ = tokenize(tokenizer, [ZERO_SHOT_PROMPT.format(sentence=t.strip()) for t in texts], args.max_length)
    # A word's last token needs no input position, so single-token words share one pass per prompt.
    seqs = list(dict.fromkeys(tuple(p + w[:-1]) for p in prompts for w in words))
    row_of = {s: i for i, s in enumerate(seqs)}
    logps: dict[int, torch.Tensor] = {}
    for batch, hidden, mask in engine.backbone_passes(lm.model, [list(s) for s in seqs], tokenizer.pad_token_id,
                                                      args.max_tokens, desc="zero-shot"):
        for row, i in enumerate(batch):
            n = int(mask[row].sum())
            longest = max(map(len, words))  # the LM head runs only where answer tokens are predicted
            logps[i] = lm.lm_head(hidden[row, max(0, n - longest):n]).float().log_softmax(-1).cpu()
    scores = torch.zeros(len(texts), len(words))
    for t, p in enumerate(prompts):
        for c, w in enumerate(words):
            logp = logps[row_of[tuple(p + w[:-1])]]
            steps = logp[len(logp) - len(w):]  # positions predicting w[0], ..., w[-1]
            scores[t, c] = steps.gather(1, torch.tensor(w)[:, None]).sum()
    return scores


def confusion(preds: torch.Tensor, labels: torch.Tensor, n: int) -> list[list[int]]:
    """Counts [true][predicted] on the test set."""
    return torch.bincount(labels.cpu() * n + preds.cpu(), minlength=n * n).view(n, n).tolist()


def scores(logits: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict:
    """Loss and classification metrics; binary tasks report the positive (second) class."""
    preds = logits.argmax(-1).tolist()
    kw = {"positive_label": 1} if len(names) == 2 else {"average": "macro"}
    return {"loss": F.cross_entropy(logits.float(), labels).item(),
            **classification_metrics(labels.tolist(), preds, **kw)}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.count_params_only:
        backbone = model.meta_backbone(args.model)
        lora.prepare(backbone, args)
        print(json.dumps(model.param_report(backbone, model.cls_head(backbone.config.hidden_size, 2)), indent=1))
        return 0
    device = model.pick_device(args.device)
    engine.setup_distributed(device)  # a no-op unless started by torchrun
    engine.seed_everything(args.seed)
    train_all, test = load_data(args)
    names = label_names(train_all)
    y_all, y_test = torch.tensor(encode_labels(train_all, names)), torch.tensor(encode_labels(test, names))
    train_idx, val_idx = stratified_split(train_all.labels, args.val_fraction, args.seed)
    if not train_idx or not val_idx:
        raise DataError(f"{train_all.path}: {len(train_idx) + len(val_idx)} rows are too few for a training and a "
                        f"validation split at --val-fraction {args.val_fraction}; add rows or change --val-fraction")
    for split, y in (("train", y_all[train_idx]), ("validation", y_all[val_idx]), ("test", y_test)):
        balance = ", ".join(f"{n}: {int((y == i).sum())}" for i, n in enumerate(names))
        print(f"{split:>10}: {len(y):6d} sentences ({balance})")

    dtype = model.pick_dtype(device, args.dtype)
    run_dir = Path(args.runs_dir) / (args.run_name or f"sst2-{Path(args.model).name}-s{args.seed}")
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lm, tokenizer = model.load_backbone(args.model, device, dtype)
    print(f"backbone {args.model} on {device} in {dtype} ({time.perf_counter() - t0:.1f} s)")
    seqs_all, cut_all = tokenize(tokenizer, train_all.texts, args.max_length)
    seqs_test, cut_test = tokenize(tokenizer, test.texts, args.max_length)
    if cut_all or cut_test:
        print(f"truncated to {args.max_length} tokens: {cut_all} training and {cut_test} test sentences")
    cache, k = not lora.trains_backbone(args), args.unfreeze_last
    if args.lora_rank:
        print("feature cache off: LoRA adapts every block, so every step and evaluation runs the backbone")
    elif k:
        print(f"cached: the states below the top {k} blocks, which every step and evaluation runs")
    t0 = time.perf_counter()
    x_all = features(lm, tokenizer, seqs_all, args, "train").to(device) if cache else None
    states = engine.trunk_states(lm, seqs_all, tokenizer.pad_token_id, args, "train") if k else None
    states_test = engine.trunk_states(lm, seqs_test, tokenizer.pad_token_id, args, "test") if k else None

    def top_pooled(rows, states=states) -> torch.Tensor:
        """--unfreeze-last: pooled outputs of the top blocks on cached trunk states."""
        x, mask = engine.pad_rows([states[i] for i in rows], device)
        return model.pool(model.top(lm.model, x, k), mask, args.pooling).float()

    def top_pooled_all(rows, states) -> torch.Tensor:
        out = torch.empty(len(rows), lm.config.hidden_size, device=device)
        with torch.no_grad():
            for b in engine.length_batches([len(states[i]) for i in rows], args.max_tokens):
                out[b] = top_pooled([rows[j] for j in b], states)
        return out

    def test_features() -> torch.Tensor:
        """The test set's pooled features from the backbone as it is now (the base model's, for "before")."""
        if k:
            return top_pooled_all(range(len(states_test)), states_test)
        return features(lm, tokenizer, seqs_test, args, "test", cache).to(device)
    x_test = test_features()
    feature_s = time.perf_counter() - t0
    y_all, y_test = y_all.to(device), y_test.to(device)

    torch.manual_seed(args.seed)
    head = model.cls_head(lm.config.hidden_size, len(names)).to(device)
    results = {"before": scores(head(x_test).detach(), y_test, names)}
    if args.zero_shot:
        results["zero_shot"] = scores(zero_shot(lm, tokenizer, test.texts, names, args).to(device), y_test, names)
    trained = lora.prepare(lm.model, args)
    print(f"training {trained}")

    def embed(rows: list[int]) -> torch.Tensor:
        """Pooled features of training rows: cached, the trained top on cached trunk states, or a full pass."""
        if cache:
            return x_all[rows]
        if k:
            return top_pooled(rows)
        ids, mask = engine.pad_batch([seqs_all[i] for i in rows], tokenizer.pad_token_id, device)
        return model.pool(lm.model(input_ids=ids).last_hidden_state, mask, args.pooling).float()  # right-padded, causal

    def epoch_batches(epoch: int):
        if cache:
            order = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(args.seed + epoch))
            return torch.tensor(train_idx, device=device)[order.to(device)].split(args.batch_size)
        # backbone passes: length-sorted batches pad little
        lengths = [len(seqs_all[i]) for i in train_idx]
        batches = engine.length_batches(lengths, max_tokens=10**9, max_batch=args.batch_size, max_padding=1.0)
        return engine.shuffled([[train_idx[i] for i in b] for b in batches], args.seed + epoch)

    def evaluate():
        x_val = x_all[val_idx] if cache else top_pooled_all(val_idx, states) if k else \
            features(lm, tokenizer, [seqs_all[i] for i in val_idx], args, "validation", cache=False).to(device)
        with torch.no_grad():
            row = scores(head(x_val), y_all[val_idx], names)
        return {"val_loss": row.pop("loss"), **row}

    t0 = time.perf_counter()
    rows = engine.fit(head, epoch_batches, lambda b: F.cross_entropy(head(embed(b)).float(), y_all[b]),
                      evaluate, args, run_dir, device, backbone=lm.model)
    if not cache:
        x_test = test_features()
    with torch.no_grad():
        test_logits = head(x_test)
    results["after"] = scores(test_logits, y_test, names)
    params = model.param_report(lm.model, head)
    keys = ["accuracy", "precision", "recall", "f1", "loss"]
    print("\ntest set (%d sentences)\n%s" % (len(y_test), engine.table(results, keys)))
    print("\nparameters: " + ", ".join(f"{k} {v:,}" for k, v in params.items()))
    info = {"task": "sst2", "base_model": args.model, "trained": trained,
            "command": shlex.join(["python"] + sys.argv),
            "resolved_model": model.resolve_model(args.model), "labels": names, "metrics": results,
            "confusion": confusion(test_logits.argmax(-1), y_test, len(names)), "params": params, "epochs": rows,
            "split": {"train": len(train_idx), "validation": len(val_idx), "test": len(y_test),
                      "seed": args.seed, "stratify_by": "label"},
            "timing": {"features_s": feature_s, "train_s": time.perf_counter() - t0,
                       "tokens": sum(map(len, seqs_all)) + sum(map(len, seqs_test))}}
    if not engine.is_main():  # rank 0 writes the run's files
        return 0
    engine.save_atomic({"weight": head.weight.detach().cpu().contiguous()}, run_dir / "head.safetensors")
    if not cache:
        engine.save_atomic(lora.trained_state(lm.model, head), run_dir / "adapters.safetensors")
    export = model.export(Path(args.export), args.model, "cls", head, tokenizer, names, lm.model) \
        if args.export else None
    return engine.publish(run_dir, info, args, export)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (DataError, DataUnavailable, lora.TuningError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
