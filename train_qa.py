"""Train a SQuAD v2 span head on a frozen Llama (or with its top blocks: --unfreeze-last, or LoRA: --lora-rank);
evaluate before, zero-shot and after.

    python train_qa.py --epochs 3                        # Llama-3.2-1B, SQuAD 2.0 train -> dev
    python train_qa.py --model smollm2-135m --train-file data/samples/squad_train.json \\
        --eval-file data/samples/squad_test.json         # offline demo
    python train_qa.py --eval-run runs/NAME              # score a trained run again (make eval-squad)

Decoder layout: question first, then context, then one trailing null token whose hidden state has
seen both; the no-answer score is read there (position 0 sees nothing in a causal model).
"""
import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import engine
import lora
import model
from data.fetch import DataUnavailable, fetch_file, write_atomic
from data.split import stratified_split
from data.squad import (SquadFormatError, load_squad, make_windows, postprocess, predictions,
                        choose_threshold, split_articles, to_squad_json)
from metrics import MetricsInputError
from metrics.squad import score

ZERO_SHOT_PROMPT = ("Answer the question with a short span copied from the context. If the context does not "
                    "contain the answer, reply \"unanswerable\".\n\nContext: {context}\nQuestion: {question}\nAnswer:")
TABLE_KEYS = ["exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "bleu", "rougeL", "meteor"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    engine.common_args(p, lr=2e-3, batch_size=32)
    p.add_argument("--train-file", help="SQuAD-format training JSON (default: SQuAD 2.0 train)")
    p.add_argument("--eval-file", help="SQuAD-format test JSON (default: SQuAD 2.0 dev)")
    p.add_argument("--article-split", type=float, metavar="FRACTION",
                   help="no train file: train and test on whole articles of --eval-file, this share for test")
    p.add_argument("--max-train-examples", type=int, help="reproducible subsample (seeded)")
    p.add_argument("--max-eval-examples", type=int)
    p.add_argument("--max-length", type=int, default=384)
    p.add_argument("--doc-stride", type=int, default=128)
    p.add_argument("--max-question-tokens", type=int, default=64)
    p.add_argument("--layout", choices=["plain", "echo"], default="plain",
                   help="echo: the context twice, spans read from the second copy (each token has seen the answer)")
    p.add_argument("--n-best", type=int, default=20)
    p.add_argument("--max-answer-length", type=int, default=30)
    p.add_argument("--cache-features", choices=["auto", "always", "never"], default="auto",
                   help="auto: cache window features on disk when they fit --cache-budget-gb")
    p.add_argument("--cache-budget-gb", type=float, default=50.0)
    p.add_argument("--eval-run", metavar="RUN_DIR", help="evaluate a trained run's head on the test set, no training "
                   "('latest': the newest QA run under --runs-dir)")
    return engine.parse(p, argv)


def subsample(examples, n, seed):
    if n is None or n >= len(examples):
        return examples
    keep = np.random.default_rng(seed).choice(len(examples), n, replace=False)
    return [examples[i] for i in sorted(keep)]


def load_sets(args):
    """(labelled training examples, test examples); the test set is the official dev set by default."""
    hint = " (offline? try `make demo-qa`, or pass --train-file/--eval-file)"
    try:
        test_path = args.eval_file or fetch_file("squad_v2_dev")
        if args.article_split:
            train, test = split_articles(load_squad(test_path), args.article_split, args.seed)
        else:
            train, test = load_squad(args.train_file or fetch_file("squad_v2_train")), load_squad(test_path)
    except DataUnavailable as e:
        raise DataUnavailable(str(e) + hint) from None
    return subsample(train, args.max_train_examples, args.seed), subsample(test, args.max_eval_examples, args.seed)


def windows_for(examples, tokenizer, args):
    return make_windows(examples, tokenizer, args.max_length, args.doc_stride, args.max_question_tokens,
                        echo=args.layout == "echo")


class WindowFeatures:
    """What a window's span and no-answer scores are read from: the backbone's hidden states of its context tokens
    and null token. A frozen backbone's are cached on disk when they fit the budget. With --unfreeze-last K the
    cache holds the states entering the top K blocks (every position: those blocks attend to the question too),
    and each call runs only the top on them. Otherwise (LoRA, or over budget) each call runs the backbone."""

    def __init__(self, lm, tokenizer, windows, args, name: str):
        self.lm, self.pad, self.windows = lm, tokenizer.pad_token_id, windows
        self.top = args.unfreeze_last  # 0: the whole backbone is frozen
        seqs = [w.input_ids for w in windows]
        rows = sum(len(s) if self.top else len(s) - w.context_start for s, w in zip(seqs, windows))
        gb = rows * lm.config.hidden_size * lm.dtype.itemsize / 1e9
        fits = args.cache_features == "always" or (args.cache_features == "auto" and gb <= args.cache_budget_gb)
        self.cached = fits and not args.lora_rank  # adapters change every block at every step
        why = "LoRA adapts every block" if args.lora_rank else \
            "--cache-features never" if args.cache_features == "never" else "over --cache-budget-gb"
        what = f"states below the top {self.top} blocks" if self.top else "features"
        fate = "cached on disk" if self.cached else f"recomputed every epoch ({why})"
        print(f"{name}: {len(windows)} windows, {sum(map(len, seqs)):,} tokens; {what} {gb:.2f} GB -> {fate}")
        if self.cached and self.top:
            self.store = engine.trunk_states(lm, seqs, self.pad, args, name)
        elif self.cached:
            path = engine.feature_cache_path(args, lm, seqs,
                                             starts=engine.data_fingerprint([[w.context_start for w in windows]]))

            def compute(idx):
                for batch, feats in engine.backbone_features(
                        engine.feature_module(lm.model, args), [seqs[i] for i in idx], self.pad, args.max_tokens,
                        f"features {name}", lambda b, hidden, _: [self._slice(hidden[r], idx[i])
                                                                  for r, i in enumerate(b)]):
                    yield [idx[i] for i in batch], feats
            self.store = engine.cached_features(path, seqs, compute)

    def _slice(self, hidden: torch.Tensor, i: int) -> torch.Tensor:
        w = self.windows[i]
        return hidden[w.context_start:len(w.input_ids)]

    def __call__(self, idx: list[int]) -> list[torch.Tensor]:
        # grad mode is the caller's: the loss reaches what trains in the backbone; a frozen one records nothing
        if self.cached and not self.top:
            return [self.store[i] for i in idx]
        device = next(self.lm.parameters()).device
        if self.cached:
            states, _ = engine.pad_rows([self.store[i] for i in idx], device)
            hidden = model.top(self.lm.model, states, self.top)
        else:
            ids, _ = engine.pad_batch([self.windows[i].input_ids for i in idx], self.pad, device)
            hidden = self.lm.model(input_ids=ids).last_hidden_state  # right-padded and causal: no mask needed
        return [self._slice(hidden[r], i) for r, i in enumerate(idx)]


def span_logits(head, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) start and end logits over the padded rows; padding gets -inf."""
    x, mask = engine.pad_rows(feats, head.weight.device)
    logits = head(x.float()).masked_fill(~mask.bool()[..., None], float("-inf"))
    return logits[..., 0], logits[..., 1]


def targets(windows, idx, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels as rows of the feature slice (context tokens then the null token)."""
    return (torch.tensor([windows[i].start_position - windows[i].context_start for i in idx], device=device),
            torch.tensor([windows[i].end_position - windows[i].context_start for i in idx], device=device))


def span_loss(head, source: WindowFeatures, idx: list[int]) -> torch.Tensor:
    start, end = span_logits(head, source(idx))
    s, e = targets(source.windows, idx, start.device)
    return (F.cross_entropy(start, s) + F.cross_entropy(end, e)) / 2


def batches(windows, batch_size: int) -> list[list[int]]:
    """Length-sorted batches, so padding in the head (and the backbone, uncached) stays small."""
    return engine.length_batches([len(w.input_ids) for w in windows], max_tokens=10**9, max_batch=batch_size)


@torch.no_grad()
def predict(head, source: WindowFeatures, examples, args) -> tuple[dict, dict, float]:
    """(span text, null-minus-span score diff) per question, and the mean span loss over the windows."""
    windows = source.windows
    starts, ends = [None] * len(windows), [None] * len(windows)
    loss, n = 0.0, 0
    for idx in batches(windows, args.batch_size):
        start, end = span_logits(head, source(idx))
        s, e = targets(windows, idx, start.device)
        loss += (F.cross_entropy(start, s, reduction="sum") + F.cross_entropy(end, e, reduction="sum")).item() / 2
        n += len(idx)
        for r, i in enumerate(idx):
            w, k = windows[i], len(windows[i].input_ids) - windows[i].context_start
            full_s, full_e = np.zeros(len(w.input_ids), np.float32), np.zeros(len(w.input_ids), np.float32)
            full_s[w.context_start:], full_e[w.context_start:] = start[r, :k].cpu().numpy(), end[r, :k].cpu().numpy()
            starts[i], ends[i] = full_s, full_e
    span, diff = postprocess(examples, windows, starts, ends, args.n_best, args.max_answer_length)
    return span, diff, loss / max(n, 1)


def squad_scores(examples, preds: dict, na_prob: dict) -> dict:
    return score(to_squad_json(examples)["data"], preds, na_prob)


def flat(result: dict) -> dict:
    """The table's numbers from a metrics.squad result (percentages as the official script prints them)."""
    s = result["squad_v2"]
    return {**{k: s[k] for k in ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1") if k in s},
            "bleu": (result["bleu"] or {}).get("bleu"), "rougeL": (result["rouge"] or {}).get("rougeL"),
            "meteor": (result["meteor"] or {}).get("meteor")}


def zero_shot(lm, tokenizer, examples, args) -> dict[str, str]:
    """Greedy answers (<= 30 new tokens) of the LM itself; an instructed 'unanswerable' becomes ""."""
    tokenizer.padding_side = "left"  # generation continues from the right edge
    prompts = [ZERO_SHOT_PROMPT.format(context=ex.context, question=ex.question.strip()) for ex in examples]
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    answers = {}
    device = next(lm.parameters()).device
    for idx in engine.length_batches(lengths, args.max_tokens, max_batch=32):
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
        with torch.inference_mode():
            out = lm.generate(**enc, max_new_tokens=30, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        for i, text in zip(idx, tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)):
            text = text.strip().split("\n")[0].strip()
            answers[examples[i].id] = "" if "unanswerable" in text.lower() else text
        print(f"zero-shot: {len(answers)}/{len(examples)} answered", end="\r")
    tokenizer.padding_side = "right"
    print()
    return answers


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.count_params_only:
        backbone = model.meta_backbone(args.model)
        lora.prepare(backbone, args)
        print(json.dumps(model.param_report(backbone, model.qa_head(backbone.config.hidden_size)), indent=1))
        return 0
    if args.eval_run:
        return evaluate_run(args)
    device = model.pick_device(args.device)
    engine.setup_distributed(device)  # a no-op unless started by torchrun
    engine.seed_everything(args.seed)
    train_all, test = load_sets(args)
    train_idx, val_idx = stratified_split([ex.has_answer for ex in train_all], args.val_fraction, args.seed)
    train, val = [train_all[i] for i in train_idx], [train_all[i] for i in val_idx]
    for name, part in (("train", train), ("validation", val), ("test", test)):
        answerable = sum(ex.has_answer for ex in part)
        print(f"{name:>10}: {len(part):6d} questions ({answerable} answerable, {len(part) - answerable} not)")

    lm, tokenizer = model.load_backbone(args.model, device, model.pick_dtype(device, args.dtype))
    run_dir = Path(args.runs_dir) / (args.run_name or f"squad-{Path(args.model).name}-s{args.seed}")
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sources = {name: WindowFeatures(lm, tokenizer, windows_for(part, tokenizer, args), args, name)
               for name, part in (("train", train), ("validation", val), ("test", test))}
    feature_s = time.perf_counter() - t0

    torch.manual_seed(args.seed)
    head = model.qa_head(lm.config.hidden_size).to(device)

    def test_result(threshold: float) -> tuple[dict, dict, dict]:
        span, diff, _ = predict(head, sources["test"], test, args)
        preds, na_prob = predictions(span, diff, threshold)
        return squad_scores(test, preds, na_prob), preds, na_prob

    def val_threshold() -> float:
        span, diff, _ = predict(head, sources["validation"], val, args)
        return choose_threshold(diff, val, span)

    results = {"before": test_result(val_threshold())[0]}
    if args.zero_shot:
        answers = zero_shot(lm, tokenizer, test, args)
        results["zero_shot"] = squad_scores(test, answers, {q: float(a == "") for q, a in answers.items()})
    trained = lora.prepare(lm.model, args)
    print(f"training {trained}")

    def epoch_batches(epoch: int):
        return engine.shuffled(batches(sources["train"].windows, args.batch_size), args.seed + epoch)

    def evaluate():
        span, diff, loss = predict(head, sources["validation"], val, args)
        preds, _ = predictions(span, diff, choose_threshold(diff, val, span))
        s = squad_scores(val, preds, None)["squad_v2"]
        return {"val_loss": loss, **{k: s[k] for k in ("exact", "f1", "HasAns_f1", "NoAns_f1") if k in s}}

    t0 = time.perf_counter()
    rows = engine.fit(head, epoch_batches, lambda idx: span_loss(head, sources["train"], idx), evaluate,
                      args, run_dir, device, backbone=lm.model)
    threshold = val_threshold()
    results["after"], preds, na_prob = test_result(threshold)
    params = model.param_report(lm.model, head)
    if not engine.is_main():  # rank 0 writes the run's files
        return 0
    write_predictions(run_dir, test, preds, na_prob)
    print_results(results, len(test), threshold, run_dir)
    print("parameters: " + ", ".join(f"{k} {v:,}" for k, v in params.items()))
    info = {"task": "squad_v2", "base_model": args.model, "trained": trained,
            "resolved_model": model.resolve_model(args.model),
            "command": shlex.join(["python"] + sys.argv), "threshold": threshold,
            "metrics": {k: flat(v) for k, v in results.items()}, "scores": results, "params": params, "epochs": rows,
            "split": {"train": len(train), "validation": len(val), "test": len(test), "seed": args.seed,
                      "stratify_by": "has_answer"},
            "timing": {"features_s": feature_s, "train_s": time.perf_counter() - t0,
                       "tokens": sum(len(w.input_ids) for s in sources.values() for w in s.windows)}}
    engine.save_atomic({"weight": head.weight.detach().cpu().contiguous(),
                        "bias": head.bias.detach().cpu().contiguous()}, run_dir / "head.safetensors")
    if lora.trains_backbone(args):
        engine.save_atomic(lora.trained_state(lm.model, head), run_dir / "adapters.safetensors")
    export = model.export(Path(args.export), args.model, "qa", head, tokenizer, backbone=lm.model) \
        if args.export else None
    return engine.publish(run_dir, info, args, export)


def write_predictions(run_dir: Path, test, preds: dict, na_prob: dict) -> None:
    """preds.json / na_prob.json in the official formats, and the test questions they answer."""
    write_atomic(run_dir / "preds.json", json.dumps(preds, indent=1))
    write_atomic(run_dir / "na_prob.json", json.dumps(na_prob, indent=1))
    write_atomic(run_dir / "test_data.json", json.dumps(to_squad_json(test)))


def print_results(results: dict, n_test: int, threshold: float, run_dir: Path) -> None:
    print(f"\ntest set ({n_test} questions; null threshold {threshold:.3f} chosen on validation)")
    print(engine.table({k: flat(v) for k, v in results.items()}, TABLE_KEYS))
    print(f"\nrescore: python -m metrics.squad {run_dir}/preds.json --data {run_dir}/test_data.json "
          f"--na-prob-file {run_dir}/na_prob.json")


def latest_qa_run(runs: Path) -> Path:
    found = sorted((p.stat().st_mtime, p.parent) for p in runs.glob("*/metrics.json")
                   if json.loads(p.read_text()).get("task") == "squad_v2")
    if not found:
        raise DataUnavailable(f"no trained QA run under {runs}/; run `make demo-qa` or train_qa.py first")
    return found[-1][1]


def evaluate_run(args) -> int:
    """`make eval-squad`: a trained run (head, and adapters or blocks if it trained them) on the test set (its own,
    or --eval-file), with its threshold."""
    run_dir = latest_qa_run(Path(args.runs_dir)) if args.eval_run == "latest" else Path(args.eval_run)
    needed = [run_dir / f for f in ("config.json", "metrics.json", "head.safetensors")]
    if not all(f.is_file() for f in needed) or json.loads(needed[1].read_text()).get("task") != "squad_v2":
        raise DataUnavailable(f"{run_dir} holds no trained QA run (config.json, metrics.json of task squad_v2 "
                              "and head.safetensors); pass a run folder of train_qa.py, or 'latest'")
    config, info = (json.loads(f.read_text()) for f in needed[:2])
    for key in ("model", "max_length", "doc_stride", "max_question_tokens", "layout", "n_best", "max_answer_length",
                "dtype"):
        setattr(args, key, config[key])
    for key in ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "unfreeze_last"):  # absent: head only
        setattr(args, key, config.get(key, getattr(args, key)))
    test = load_squad(args.eval_file or run_dir / "test_data.json")
    test = subsample(test, args.max_eval_examples, args.seed)
    device = model.pick_device(args.device)
    lm, tokenizer = model.load_backbone(args.model, device, model.pick_dtype(device, args.dtype))
    head = model.qa_head(lm.config.hidden_size)
    head.load_state_dict(load_file(run_dir / "head.safetensors"))
    lora.prepare(lm.model, args)
    if lora.trains_backbone(args):
        lora.load_trained(lm.model, head, run_dir / "adapters.safetensors")
    head.to(device).eval()
    source = WindowFeatures(lm, tokenizer, windows_for(test, tokenizer, args), args, "test")
    span, diff, _ = predict(head, source, test, args)
    preds, na_prob = predictions(span, diff, info["threshold"])
    result = squad_scores(test, preds, na_prob)
    out = run_dir / "eval"  # beside the run's own files, which stay as training wrote them
    write_predictions(out, test, preds, na_prob)
    write_atomic(out / "metrics.json", json.dumps(result, indent=1))
    print_results({"after": result}, len(test), info["threshold"], out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (SquadFormatError, DataUnavailable, MetricsInputError, lora.TuningError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
