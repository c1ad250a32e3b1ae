"""Train a sentiment head (SST-2 by default) on a frozen Llama; evaluate before, zero-shot and after.

    python train_cls.py --epochs 3                                   # Llama-3.2-1B on GLUE SST-2
    python train_cls.py --model smollm2-135m --data-dir data/samples/sst2   # offline demo
    python train_cls.py --lora-rank 8                                # LoRA adapters train with the head

The frozen backbone runs once per sentence: pooled features are cached on disk and every epoch trains
the head on them. With --unfreeze-last K the cache holds the states below the top K blocks, and every step
runs only those; with --lora-rank every step runs the whole backbone.
"""
import argparse
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import distributed
import flags
import hub
import loop
import model
from batching import length_batches, shuffled
from data.fetch import DataUnavailable, fetch_file
from data.labelled import DataError, Labelled, encode_labels, label_names, read_labelled
from data.split import stratified_split
from features import backbone_passes
from metrics.classification import classification_metrics
from modes import FeatureSpec, Mode, Source, count_params
from rundir import RunDir, fingerprint
from tables import results_table

ZERO_SHOT_PROMPT = "{sentence}\nQuestion: Is this sentence positive or negative?\nAnswer:"
ZERO_SHOT_WORDS = {"0": " negative", "1": " positive", "negative": " negative", "positive": " positive"}
TABLE_KEYS = ["accuracy", "precision", "recall", "f1", "loss"]
KNOWN_NAMES = {("0", "1"): ["negative", "positive"]}  # SST-2's labels, as GLUE names them


def parse_args(argv=None) -> argparse.Namespace:
    p = flags.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.common_args(p, lr=5e-3, batch_size=16)
    p.add_argument("--data-dir", help="folder with train.tsv and dev.tsv (GLUE layout)")
    p.add_argument("--train-file", help="labelled training data (.tsv/.csv/.jsonl)")
    p.add_argument("--eval-file", help="labelled test data (.tsv/.csv/.jsonl); GLUE dev by default")
    p.add_argument("--text-column", default="sentence")
    p.add_argument("--label-column", default="label")
    p.add_argument("--max-length", type=int, default=256, help="longer sentences are truncated (and counted)")
    p.add_argument("--pooling", choices=["last", "mean"], default="last")
    p.add_argument("--label-names", help="comma list naming the labels in their sorted order (numbers as numbers), "
                   "for predictions, exports and the card; default: negative,positive for SST-2's 0/1")
    args = flags.parse(p, argv)
    if args.pooling == "mean" and (args.export or args.push_full):
        p.error("--pooling mean cannot be exported: LlamaForSequenceClassification reads the last token, so the "
                "export would disagree with the run; use --pooling last, or keep the run folder's head")
    return args


@dataclass
class Split:
    """The labelled data: the training file split into train/validation (stratified), and the test set, with
    labels as class indices into names."""
    train_all: Labelled
    test: Labelled
    names: list[str]  # the label values, sorted
    display: list[str]  # what users read for them (--label-names, or known names such as SST-2's)
    y_all: list[int]
    y_test: list[int]
    train_idx: list[int]
    val_idx: list[int]


def load_data(args) -> tuple[Labelled, Labelled]:
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


def split_data(train_all: Labelled, test: Labelled, val_fraction: float, seed: int,
               given_names: str | None = None) -> Split:
    names = label_names(train_all)
    y_all, y_test = encode_labels(train_all, names), encode_labels(test, names)  # refuses unknown test labels
    train_idx, val_idx = stratified_split(train_all.labels, val_fraction, seed)
    if not train_idx or not val_idx:
        raise DataError(f"{train_all.path}: {len(train_idx) + len(val_idx)} rows are too few for a training and a "
                        f"validation split at --val-fraction {val_fraction}; add rows or change --val-fraction")
    return Split(train_all, test, names, display_names(names, given_names), y_all, y_test, train_idx, val_idx)


def display_names(labels: list[str], given: str | None = None) -> list[str]:
    """The labels' names as users read them: --label-names, the known names of these label values, or the values."""
    if given:
        names = [n.strip() for n in given.split(",")]
        if len(names) != len(labels) or len(set(names)) != len(names) or not all(names):
            raise DataError(f"--label-names {given}: needs {len(labels)} distinct names, one per label "
                            f"({', '.join(labels)} in this order)")
        return names
    return KNOWN_NAMES.get(tuple(labels), list(labels))


def tokenize(tokenizer, texts: list[str], max_length: int, name: str = "") -> list[list[int]]:
    """Token ids, cut at max_length; how many were cut is said (for the named split)."""
    ids = tokenizer(texts, add_special_tokens=True)["input_ids"]
    if name and (cut := sum(len(s) > max_length for s in ids)):
        print(f"truncated to {max_length} tokens: {cut} {name} sentences")
    return [s[:max_length] for s in ids]


def sentence_spec(name: str, seqs: list[list[int]], pad_id: int, pooling: str) -> FeatureSpec:
    """One pooled vector per sentence."""
    return FeatureSpec(name, seqs, pad_id, lambda idx, hidden, mask: model.pool(hidden, mask, pooling).float()
                       .unbind(0), key={"pooling": pooling}, dense=True)


def features(lm, tokenizer, seqs: list[list[int]], args, name: str) -> torch.Tensor:
    """Pooled features of the frozen backbone for these sentences, through the disk cache (bench/ reuses it)."""
    spec = sentence_spec(name, seqs, tokenizer.pad_token_id, args.pooling)
    return Mode().source(lm, spec, flags.passes(args))(list(range(len(seqs))))


class Classifier:
    """The head and what its loop needs: each epoch's batches, a batch's loss, the validation row, test scores."""

    def __init__(self, head, split: Split, sources: dict[str, Source], seqs: dict[str, list[list[int]]],
                 batch_size: int, max_tokens: int, seed: int, device):
        self.head, self.split, self.sources, self.seqs = head, split, sources, seqs
        self.batch_size, self.max_tokens, self.seed = batch_size, max_tokens, seed
        self.y_all, self.y_test = (torch.tensor(y, device=device) for y in (split.y_all, split.y_test))

    def epoch_batches(self, epoch: int) -> list:
        train_idx, device = self.split.train_idx, self.y_all.device
        if self.sources["train"].stored:  # features in memory: any order costs the same
            order = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(self.seed + epoch))
            return torch.tensor(train_idx, device=device)[order.to(device)].split(self.batch_size)
        # backbone passes: length-sorted batches pad little
        lengths = [len(self.seqs["train"][i]) for i in train_idx]
        batches = length_batches(lengths, max_tokens=10**9, max_batch=self.batch_size, max_padding=1.0)
        return shuffled([[train_idx[i] for i in b] for b in batches], self.seed + epoch)

    def loss(self, rows) -> torch.Tensor:
        return F.cross_entropy(self.head(self.sources["train"](rows)).float(), self.y_all[rows])

    def logits(self, split: str, idx: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return self.head(self.sources[split].all(idx, [len(s) for s in self.seqs[split]], self.max_tokens))

    def validate(self) -> dict:
        row = scores(self.logits("train", self.split.val_idx), self.y_all[self.split.val_idx])
        return {"val_loss": row.pop("loss"), **row}

    def test(self) -> tuple[dict, torch.Tensor]:
        logits = self.logits("test", list(range(len(self.y_test))))
        return scores(logits, self.y_test), logits


def scores(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Loss and classification metrics; binary tasks report the positive (second) class."""
    kw = {"positive_label": 1} if logits.shape[-1] == 2 else {"average": "macro"}
    return {"loss": F.cross_entropy(logits.float(), labels).item(),
            **classification_metrics(labels.tolist(), logits.argmax(-1).tolist(), **kw)}


def zero_shot(lm, tokenizer, texts: list[str], names: list[str], max_length: int, max_tokens: int) -> torch.Tensor:
    """Class log-likelihoods of the LM's answer word after lm-eval-harness's SST-2 prompt."""
    missing = [n for n in names if n not in ZERO_SHOT_WORDS]
    if missing:
        raise DataError(f"--zero-shot knows SST-2's labels (0/1 or negative/positive), not {missing}")
    words = [tokenizer(ZERO_SHOT_WORDS[n], add_special_tokens=False)["input_ids"] for n in names]
    prompts = tokenize(tokenizer, [ZERO_SHOT_PROMPT.format(sentence=t.strip()) for t in texts], max_length)
    # A word's last token needs no input position, so single-token words share one pass per prompt.
    seqs = list(dict.fromkeys(tuple(p + w[:-1]) for p in prompts for w in words))
    row_of = {s: i for i, s in enumerate(seqs)}
    longest = max(map(len, words))  # the LM head runs only where answer tokens are predicted
    logps: dict[int, torch.Tensor] = {}
    for batch, hidden, mask in backbone_passes(lm.model, [list(s) for s in seqs], tokenizer.pad_token_id,
                                               max_tokens, desc="zero-shot"):
        for row, i in enumerate(batch):
            n = int(mask[row].sum())
            logps[i] = lm.lm_head(hidden[row, max(0, n - longest):n]).float().log_softmax(-1).cpu()
    out = torch.zeros(len(texts), len(words))
    for t, p in enumerate(prompts):
        for c, w in enumerate(words):
            logp = logps[row_of[tuple(p + w[:-1])]]
            steps = logp[len(logp) - len(w):]  # positions predicting w[0], ..., w[-1]
            out[t, c] = steps.gather(1, torch.tensor(w)[:, None]).sum()
    return out


def confusion(preds: torch.Tensor, labels: torch.Tensor, n: int) -> list[list[int]]:
    """Counts [true][predicted] on the test set."""
    return torch.bincount(labels.cpu() * n + preds.cpu(), minlength=n * n).view(n, n).tolist()


def print_split(split: Split) -> None:
    for name, y in (("train", [split.y_all[i] for i in split.train_idx]),
                    ("validation", [split.y_all[i] for i in split.val_idx]), ("test", split.y_test)):
        balance = ", ".join(f"{n}: {y.count(i)}" for i, n in enumerate(split.names))
        print(f"{name:>10}: {len(y):6d} sentences ({balance})")


def main(argv=None) -> int:
    args = parse_args(argv)
    mode = flags.mode(args)
    if args.count_params_only:
        return count_params(args.model, mode, lambda hidden: model.cls_head(hidden, 2))
    device = flags.start(args)

    # 1. data: the training file split into train/validation, and the test set
    split = split_data(*load_data(args), args.val_fraction, args.seed, args.label_names)
    print_split(split)
    digest = fingerprint(split.train_all.texts, split.train_all.labels, split.test.texts, split.test.labels)
    config = {**vars(args), "mode": mode.name, "data": digest}  # --resume must find the same
    run = RunDir.open(flags.run_name(args, "sst2", mode), config, args.resume, args.overwrite)

    # 2. the backbone, and the features each split reads (cached while the backbone is frozen)
    t0 = time.perf_counter()
    lm, tokenizer = model.load_backbone(args.model, device, model.pick_dtype(device, args.dtype))
    print(f"backbone {args.model} on {device} in {lm.dtype} ({time.perf_counter() - t0:.1f} s)")
    seqs = {name: tokenize(tokenizer, data.texts, args.max_length, name) for name, data in (("train", split.train_all),
                                                                                          ("test", split.test))}
    t0 = time.perf_counter()
    specs = {name: sentence_spec(name, s, tokenizer.pad_token_id, args.pooling) for name, s in seqs.items()}
    for spec in specs.values():
        print(mode.cache_note(spec))
    sources = {name: mode.source(lm, spec, flags.passes(args)) for name, spec in specs.items()}
    feature_s = time.perf_counter() - t0

    # 3. before (an untrained head) and zero-shot, on the base model as loaded: mode.prepare below changes it
    torch.manual_seed(args.seed)
    clf = Classifier(model.cls_head(lm.config.hidden_size, len(split.names)).to(device), split, sources, seqs,
                     args.batch_size, args.max_tokens, args.seed, device)
    results = {"before": clf.test()[0]}
    if args.zero_shot:
        lls = zero_shot(lm, tokenizer, split.test.texts, split.names, args.max_length, args.max_tokens)
        results["zero_shot"] = scores(lls.to(device), clf.y_test)

    # 4. what trains
    mode.prepare(lm.model)
    print(f"training {mode.describe()}")

    # 5. fit, 6. after
    t0 = time.perf_counter()
    rows = loop.fit(clf.head, lm.model, clf.epoch_batches, clf.loss, clf.validate, flags.train_args(args), run,
                    device, mode.amp(device))
    results["after"], test_logits = clf.test()
    params = model.param_report(lm.model, clf.head)
    print(f"\ntest set ({len(clf.y_test)} sentences)\n{results_table(results, TABLE_KEYS)}")
    print("\nparameters: " + ", ".join(f"{k} {v:,}" for k, v in params.items()))

    # 7. save and publish (rank 0)
    timing = {"features_s": feature_s, "train_s": time.perf_counter() - t0,
              "tokens": sum(len(s) for v in seqs.values() for s in v)}
    info = summary(args, mode, split, results, confusion(test_logits.argmax(-1), clf.y_test, len(split.names)),
                   params, rows, timing)
    if not distributed.is_main():
        return 0
    run.save_trained(clf.head, lm.model, mode)
    export = model.export(Path(args.export), args.model, "cls", clf.head, tokenizer, split.display, lm.model) \
        if args.export else None
    return hub.publish(run, info, flags.push(args), export)


def summary(args, mode: Mode, split: Split, results: dict, matrix: list, params: dict, rows: list, timing: dict
            ) -> dict:
    """metrics.json: what ran, on what, and every number it produced."""
    return {"task": "sst2", "mode": mode.name, "base_model": args.model, "trained": mode.describe(),
            "command": shlex.join(["python"] + sys.argv), "resolved_model": model.resolve_model(args.model),
            "labels": split.names, "label_names": split.display, "metrics": results,
            "confusion": matrix, "params": params, "epochs": rows,
            "split": {"train": len(split.train_idx), "validation": len(split.val_idx), "test": len(split.y_test),
                      "seed": args.seed, "stratify_by": "label"}, "timing": timing}


if __name__ == "__main__":
    flags.run(main)
