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

import distributed
import flags
import hub
import loop
import model
from batching import length_batches, pad_rows, shuffled
from data.fetch import fetch_file
from data.labelled import DataError
from data.split import stratified_sample, stratified_split
from data.squad import answers_all, choose_threshold, make_windows, postprocess, predictions
from data.squad_json import load_squad, split_articles, to_squad_json, trainable
from features import data_fingerprint
from files import DataUnavailable, write_atomic
from lrgrid import per_head_loss
from metrics.squad import score
from modes import FeatureSpec, Mode, Source, count_params
from rundir import RunDir, RunError, fingerprint
from tables import results_table

ZERO_SHOT_PROMPT = ("Answer the question with a short span copied from the context. If the context does not "
                    "contain the answer, reply \"unanswerable\".\n\nContext: {context}\nQuestion: {question}\nAnswer:")
LR = 2e-3  # the head's, where --lr auto does not apply
TABLE_KEYS = ["exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "bleu", "rougeL", "meteor"]
WINDOW_FLAGS = ("max_length", "doc_stride", "max_question_tokens", "layout", "n_best", "max_answer_length")
# what --eval-run reads from the command line (the rest comes from the run): the test set and how to run on it
EVAL_RUN_FLAGS = ("eval_run", "runs_dir", "eval_file", "max_eval_examples", "seed", "device", "max_tokens", "compile",
                  "cache_features", "cache_budget_gb")


def parse_args(argv=None) -> argparse.Namespace:
    p = flags.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.common_args(p, lr=LR, batch_size=32)
    p.add_argument("--train-file", help="SQuAD-format training JSON (default: SQuAD 2.0 train)")
    p.add_argument("--eval-file", help="SQuAD-format test JSON (default: SQuAD 2.0 dev)")
    p.add_argument("--article-split", type=float, metavar="FRACTION",
                   help="no train file: train and test on whole articles of --eval-file, this share for test")
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
    args = flags.parse(p, argv)
    if args.doc_stride >= args.max_length - args.max_question_tokens:
        p.error(f"--doc-stride {args.doc_stride}: must be under --max-length minus --max-question-tokens "
                f"({args.max_length - args.max_question_tokens}), the context room of a window; lower it")
    if args.article_split and args.train_file:
        p.error("--article-split trains and tests on the articles of --eval-file; it takes no --train-file")
    if args.eval_run and (ignored := sorted(flags.given(p, args, argv) - set(EVAL_RUN_FLAGS))):
        p.error(f"--eval-run evaluates a run as it trained: {', '.join('--' + k.replace('_', '-') for k in ignored)} "
                f"would be ignored; it takes only {', '.join('--' + k.replace('_', '-') for k in EVAL_RUN_FLAGS)}")
    return args


def subsample(examples, n, seed):
    """At most n questions, answerable and not in their shares (data.split.stratified_sample), in file order."""
    return [examples[i] for i in stratified_sample([ex.has_answer for ex in examples], n, seed)]


def load_sets(args):
    """(labelled training examples, test examples); the test set is the official dev set by default."""
    hint = " (offline? try `make demo-qa`, or pass --train-file/--eval-file)"
    try:
        test_path = args.eval_file or fetch_file("squad_v2_dev")
        if args.article_split:
            examples = load_squad(test_path, test=True)
            if len({ex.title for ex in examples}) < 2:
                raise DataError(f"{test_path}: --article-split needs at least 2 articles (titles) to put whole "
                                "ones on each side; the file holds 1: pass a file with more, or --train-file")
            train, test = split_articles(examples, args.article_split, args.seed)
            train = trainable(train)
        else:
            train = load_squad(args.train_file or fetch_file("squad_v2_train"))
            test = load_squad(test_path, test=True)
    except DataUnavailable as e:
        raise DataUnavailable(str(e) + hint) from None
    if args.train_file and Path(args.train_file).resolve() == Path(test_path).resolve():
        print(f"warning: --train-file and --eval-file are both {test_path}: the test scores are on training data",
              file=sys.stderr)
    return subsample(train, args.max_train_examples, args.seed), subsample(test, args.max_eval_examples, args.seed)


def split_train(train_all, val_fraction: float, seed: int, source) -> tuple[list, list]:
    train_idx, val_idx = stratified_split([ex.has_answer for ex in train_all], val_fraction, seed)
    if not train_idx or not val_idx:
        raise DataError(f"{source}: {len(train_all)} questions are too few for a training and a validation "
                              f"split at --val-fraction {val_fraction}; pass more questions or change --val-fraction")
    return [train_all[i] for i in train_idx], [train_all[i] for i in val_idx]


def windows_for(examples, tokenizer, args):
    return make_windows(examples, tokenizer, args.max_length, args.doc_stride, args.max_question_tokens,
                        echo=args.layout == "echo")


def window_spec(name: str, windows, pad_id: int, cache: bool) -> FeatureSpec:
    """What the head reads of a window: the hidden states of its context tokens and of its trailing null token."""
    def pick(idx, hidden, mask):
        return [hidden[r, windows[i].context_start:len(windows[i].input_ids)] for r, i in enumerate(idx)]
    return FeatureSpec(name, [w.input_ids for w in windows], pad_id, pick,
                       key={"starts": data_fingerprint([[w.context_start for w in windows]])}, dense=False,
                       cache=cache)


def fits_cache(mode: Mode, windows, hidden_size: int, itemsize: int, policy: str, budget_gb: float) -> bool:
    """--cache-features: always, never, or (auto) when the cache fits the budget. --unfreeze-last keeps every
    position (the top blocks attend to the question too), the head alone only the context and null rows."""
    rows = sum(len(w.input_ids) if mode.caches_every_position else len(w.input_ids) - w.context_start
               for w in windows)
    gb = rows * hidden_size * itemsize / 1e9
    return policy == "always" or (policy == "auto" and gb <= budget_gb)


def span_logits(head, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) start and end logits over the padded rows; padding gets -inf."""
    x, mask = pad_rows(feats, next(head.parameters()).device)
    logits = head(x.float()).masked_fill(~mask.bool()[..., None], float("-inf"))
    return logits[..., 0], logits[..., 1]


def targets(windows, idx, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels as rows of the feature slice (context tokens then the null token)."""
    return (torch.tensor([windows[i].start_position - windows[i].context_start for i in idx], device=device),
            torch.tensor([windows[i].end_position - windows[i].context_start for i in idx], device=device))


def span_loss(head, source: Source, windows, idx: list[int]) -> torch.Tensor:
    start, end = span_logits(head, source(idx))
    s, e = targets(windows, idx, start.device)
    return (per_head_loss(F.cross_entropy, start, s) + per_head_loss(F.cross_entropy, end, e)) / 2


def batches(windows, batch_size: int) -> list[list[int]]:
    """Length-sorted batches, so padding in the head (and the backbone, uncached) stays small."""
    return length_batches([len(w.input_ids) for w in windows], max_tokens=10**9, max_batch=batch_size)


@torch.no_grad()
def predict(head, source: Source, examples, windows, batch_size: int, n_best: int, max_answer_length: int
            ) -> tuple[dict, dict, float, dict]:
    """(span text, null-minus-span score diff) per question, the mean span loss over the windows, and (per
    question) the span's first character in its context."""
    starts, ends = [None] * len(windows), [None] * len(windows)
    loss, n = 0.0, 0
    for idx in batches(windows, batch_size):
        start, end = span_logits(head, source(idx))
        s, e = targets(windows, idx, start.device)
        loss += (F.cross_entropy(start, s, reduction="sum") + F.cross_entropy(end, e, reduction="sum")).item() / 2
        n += len(idx)
        for r, i in enumerate(idx):
            w, k = windows[i], len(windows[i].input_ids) - windows[i].context_start
            full_s, full_e = np.zeros(len(w.input_ids), np.float32), np.zeros(len(w.input_ids), np.float32)
            full_s[w.context_start:], full_e[w.context_start:] = start[r, :k].cpu().numpy(), end[r, :k].cpu().numpy()
            starts[i], ends[i] = full_s, full_e
    span, diff, start = postprocess(examples, windows, starts, ends, n_best, max_answer_length)
    return span, diff, loss / max(n, 1), start


class Reader:
    """The span head and what its loop needs: each epoch's batches, a batch's loss, the validation row, the
    no-answer threshold chosen on validation, and the test set's scores and predictions."""

    def __init__(self, head, sets: dict[str, list], windows: dict[str, list], sources: dict[str, Source], args,
                 v1: bool = False):
        self.head, self.sets, self.windows, self.sources = head, sets, windows, sources
        self.v1 = v1  # validation holds no unanswerable question: no threshold, every question answered
        self.batch_size, self.seed = args.batch_size, args.seed
        self.n_best, self.max_answer_length = args.n_best, args.max_answer_length

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        return shuffled(batches(self.windows["train"], self.batch_size), self.seed + epoch)

    def loss(self, idx: list[int]) -> torch.Tensor:
        return span_loss(self.head, self.sources["train"], self.windows["train"], idx)

    def predict(self, split: str) -> tuple[dict, dict, float, dict]:
        return predict(self.head, self.sources[split], self.sets[split], self.windows[split], self.batch_size,
                       self.n_best, self.max_answer_length)

    def validate(self) -> dict:
        """The validation row, with the no-answer threshold chosen on it for the weights as they are."""
        span, diff, loss, _ = self.predict("validation")
        threshold = None if self.v1 else choose_threshold(diff, self.sets["validation"], span)
        preds, _ = predictions(span, diff, threshold)
        s = squad_scores(self.sets["validation"], preds, None)["squad_v2"]
        return {"val_loss": loss, **{k: s[k] for k in ("exact", "f1", "HasAns_f1", "NoAns_f1") if k in s},
                "threshold": threshold}

    def threshold(self) -> float | None:
        return self.validate()["threshold"]

    def test(self, threshold: float | None) -> tuple[dict, dict, dict]:
        span, diff, _, _ = self.predict("test")
        preds, na_prob = predictions(span, diff, threshold)
        return squad_scores(self.sets["test"], preds, na_prob), preds, na_prob


def squad_scores(examples, preds: dict, na_prob: dict) -> dict:
    return score(to_squad_json(examples)["data"], preds, na_prob)


def flat(result: dict) -> dict:
    """The table's numbers from a metrics.squad result (percentages as the official script prints them)."""
    s = result["squad_v2"]
    return {**{k: s[k] for k in ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1") if k in s},
            "bleu": (result["bleu"] or {}).get("bleu"), "rougeL": (result["rouge"] or {}).get("rougeL"),
            "meteor": (result["meteor"] or {}).get("meteor")}


def zero_shot(lm, tokenizer, examples, max_tokens: int) -> dict[str, str]:
    """Greedy answers (<= 30 new tokens) of the LM itself; an instructed 'unanswerable' becomes ""."""
    tokenizer.padding_side = "left"  # generation continues from the right edge
    prompts = [ZERO_SHOT_PROMPT.format(context=ex.context, question=ex.question.strip()) for ex in examples]
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    answers = {}
    device = next(lm.parameters()).device
    for idx in length_batches(lengths, max_tokens, max_batch=32):
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


def sources_for(mode: Mode, lm, tokenizer, sets: dict[str, list], args, keep: bool = True) -> tuple[dict, dict]:
    """Each split's windows and the source of their features (cached while the backbone is frozen and they fit;
    on disk unless not `keep`)."""
    windows, sources = {}, {}
    for name, examples in sets.items():
        windows[name] = windows_for(examples, tokenizer, args)
        cache = fits_cache(mode, windows[name], lm.config.hidden_size, lm.dtype.itemsize, args.cache_features,
                           args.cache_budget_gb)
        spec = window_spec(name, windows[name], tokenizer.pad_token_id, cache)
        print(f"{len(windows[name])} windows, {sum(map(len, spec.seqs)):,} tokens; {mode.cache_note(spec, keep)}")
        sources[name] = mode.source(lm, spec, flags.passes(args, keep))
    return windows, sources


def main(argv=None) -> int:
    args = parse_args(argv)
    mode = flags.mode(args)
    if args.count_params_only:
        return count_params(args.model, mode, model.qa_head)
    if args.eval_run:
        return evaluate_run(args)
    device = flags.start(args)

    # 1. data: the training questions split into train/validation (stratified by has-answer), and the test set
    train_all, test = load_sets(args)
    train, val = split_train(train_all, args.val_fraction, args.seed, args.train_file or args.eval_file)
    sets = {"train": train, "validation": val, "test": test}
    for name, part in sets.items():
        answerable = sum(ex.has_answer for ex in part)
        print(f"{name:>10}: {len(part):6d} questions ({answerable} answerable, {len(part) - answerable} not)")
    v1, test_v1 = answers_all("validation", val), answers_all("test", test)
    with model.loading(args.model) as path:
        tokenizer = model.load_tokenizer(path)
    windows_for([], tokenizer, args)  # the window flags leave room for a context: checked before any work
    run = flags.open_run(args, "squad", mode, fingerprint(*(to_squad_json(s) for s in sets.values())))

    # 2. the backbone, and the features each split's windows read
    dtype = model.pick_dtype(device, args.dtype)
    lm, tokenizer = model.load_backbone(args.model, device, dtype, tokenizer)
    t0 = time.perf_counter()
    windows, sources = sources_for(mode, lm, tokenizer, sets, args)
    feature_s = time.perf_counter() - t0

    # 3. before (an untrained head) and zero-shot, on the base model as loaded: mode.prepare below changes it
    torch.manual_seed(args.seed)
    reader = Reader(model.qa_head(lm.config.hidden_size).to(device), sets, windows, sources, args, v1)
    results = {"before": reader.test(None if test_v1 else reader.threshold())[0]}
    if args.zero_shot:
        answers = zero_shot(lm, tokenizer, test, args.max_tokens)
        results["zero_shot"] = squad_scores(test, answers, {q: float(a == "") for q, a in answers.items()})

    # 4. what trains
    mode.prepare(lm.model)
    print(f"training {mode.describe()}")

    # 5. fit, 6. after, with the threshold chosen on validation
    t0 = time.perf_counter()
    cfg = flags.train_args(args, "f1")
    if args.lr == flags.AUTO and not sources["validation"].stored:
        print(f"--lr auto: validation features are not cached (--cache-features), and each of the grid's heads would "
              f"run the backbone over them again: one head at --lr {LR:g}")
        cfg.lr = LR
    reader.head = flags.trained_head(cfg, reader.head)
    fitted = loop.fit(reader.head, lm.model, reader.epoch_batches, reader.loss, reader.validate, cfg, run, device,
                      mode.amp(device))
    reader.head = fitted.head
    # the kept epoch's row validated the weights fit kept; a resumed older run's rows have no threshold
    row = fitted.rows[fitted.selection["epoch"] - 1]
    threshold = row["threshold"] if "threshold" in row else reader.threshold()
    tested = None if test_v1 else threshold  # a v1 test set: every question answered
    results["after"], preds, na_prob = reader.test(tested)
    params = model.param_report(lm.model, reader.head)

    # 7. save and publish (rank 0)
    if not distributed.is_main():
        return 0
    write_predictions(run.path, test, preds, na_prob)
    print_results(results, len(test), tested, run.path)
    print("parameters: " + ", ".join(f"{k} {v:,}" for k, v in params.items()))
    timing = {"features_s": feature_s, "train_s": time.perf_counter() - t0,
              "tokens": sum(len(w.input_ids) for ws in windows.values() for w in ws)}
    info = summary(args, mode, sets, threshold, results, params, fitted, timing, flags.environment(device))
    base, export = model.resolve_model(args.model), None
    run.save_trained(reader.head, lm.model, mode, "qa", base)
    if args.export:  # with what predict.py needs to answer as this run did: its windows and threshold
        settings = {"task": "squad_v2", "model": args.model, "dtype": model.dtype_name(dtype), "threshold": threshold,
                    **{k: getattr(args, k) for k in WINDOW_FLAGS}}
        export = model.export(Path(args.export), args.model, "qa", reader.head, tokenizer, settings,
                              backbone=lm.model, adapter=mode.peft(lm.model, reader.head, "qa", base) if args.peft
                              else None)
    return hub.publish(run, info, flags.push(args), export)


def summary(args, mode: Mode, sets: dict, threshold: float, results: dict, params: dict, fitted: loop.Fitted,
            timing: dict, environment: dict) -> dict:
    """metrics.json: what ran, on what, and every number it produced."""
    return {"task": "squad_v2", "mode": mode.name, "base_model": args.model, "trained": mode.describe(),
            "resolved_model": model.resolve_model(args.model), "command": shlex.join(["python"] + sys.argv),
            "threshold": threshold, "metrics": {k: flat(v) for k, v in results.items()}, "scores": results,
            "params": params, "epochs": fitted.rows, **loop.fit_record(fitted),
            "split": {**{k: len(v) for k, v in sets.items()}, "seed": args.seed, "stratify_by": "has_answer",
                      "max_train_examples": args.max_train_examples, "max_eval_examples": args.max_eval_examples},
            "timing": timing, "environment": environment}


def write_predictions(folder: Path, test, preds: dict, na_prob: dict) -> None:
    """preds.json / na_prob.json in the official formats, and the test questions they answer."""
    write_atomic(folder / "preds.json", json.dumps(preds, indent=1))
    write_atomic(folder / "na_prob.json", json.dumps(na_prob, indent=1))
    write_atomic(folder / "test_data.json", json.dumps(to_squad_json(test)))


def print_results(results: dict, n_test: int, threshold: float | None, folder: Path) -> None:
    how = "every question answered (SQuAD v1)" if threshold is None else \
        f"null threshold {threshold:.3f} chosen on validation"
    print(f"\ntest set ({n_test} questions; {how})")
    print(results_table({k: flat(v) for k, v in results.items()}, TABLE_KEYS))
    print(f"\nrescore: python -m metrics.squad {folder}/preds.json --data {folder}/test_data.json "
          f"--na-prob-file {folder}/na_prob.json")


def is_qa_run(folder: Path) -> bool:
    try:
        return RunDir(folder).read_json("metrics.json").get("task") == "squad_v2"
    except RunError:  # a damaged or foreign folder beside the runs is not the latest QA run
        return False


def qa_run(runs_dir: Path, name: str) -> tuple[RunDir, dict, dict]:
    """(run, its config, its metrics) for --eval-run: a folder, or 'latest' (the newest QA run under runs_dir)."""
    if name == "latest":
        found = sorted((p.stat().st_mtime, p.parent) for p in runs_dir.glob("*/metrics.json") if is_qa_run(p.parent))
        if not found:
            raise DataUnavailable(f"no trained QA run under {runs_dir}/; run `make demo-qa` or train_qa.py first")
        name = found[-1][1]
    run = RunDir(Path(name))
    if not all(run.file(f).is_file() for f in ("config.json", "metrics.json", "head.safetensors")) or \
            run.read_json("metrics.json").get("task") != "squad_v2":
        raise DataUnavailable(f"{run.path} holds no trained QA run (config.json, metrics.json of task squad_v2 "
                              "and head.safetensors); pass a run folder of train_qa.py, or 'latest'")
    return run, run.read_json("config.json"), run.read_json("metrics.json")


def evaluate_run(args) -> int:
    """`make eval-squad`: a trained run (head, and adapters or blocks if it trained them) on the test set (its own,
    or --eval-file), with its threshold; written into RUN/eval/, beside the run's own files."""
    run, config, info = qa_run(Path(args.runs_dir), args.eval_run)
    # absent from a run's config: a flag newer than the run (its default then), or a mode's (head only)
    for key in ("model", "dtype", *WINDOW_FLAGS, "lora_rank", "lora_alpha", "lora_dropout", "lora_targets",
                "unfreeze_last"):
        setattr(args, key, config.get(key, getattr(args, key)))
    mode = flags.mode(args)
    test = subsample(load_squad(args.eval_file or run.file("test_data.json"), test=True), args.max_eval_examples,
                     args.seed)
    device = model.pick_device(args.device)
    lm, tokenizer, head = run.restore(mode, model.qa_head, args.model, device, model.pick_dtype(device, args.dtype),
                                      "qa")
    windows, sources = sources_for(mode, lm, tokenizer, {"test": test}, args)
    reader = Reader(head, {"test": test}, windows, sources, args)
    threshold = None if answers_all("test", test) else info["threshold"]  # None too: a run trained on v1 data
    result, preds, na_prob = reader.test(threshold)
    # one folder per test set evaluated, so evaluating on another file never replaces an earlier evaluation
    name = Path(args.eval_file).stem if args.eval_file else "test_data"
    out = run.path / "eval" / (name + (f"-n{args.max_eval_examples}-s{args.seed}" if args.max_eval_examples else ""))
    write_predictions(out, test, preds, na_prob)
    write_atomic(out / "metrics.json", json.dumps(result, indent=1))
    print_results({"after": result}, len(test), threshold, out)
    return 0


if __name__ == "__main__":
    flags.run(main)
