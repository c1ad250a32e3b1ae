"""Train a classification head (GLUE SST-2 by default) on a frozen Llama; evaluate before, zero-shot and after.

    python train_cls.py --epochs 3                                   # Llama-3.2-1B on GLUE SST-2
    python train_cls.py --task qnli --epochs 3                       # any GLUE classification task (data/glue.py)
    python train_cls.py --model smollm2-135m --data-dir data/samples/sst2   # offline demo
    python train_cls.py --train-file a.csv --eval-file b.csv --text-column premise,hypothesis   # own sentence pairs
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
from data import glue
from data.fetch import fetch_file
from data.glue import Task
from data.labelled import DataError, Labelled, encode_labels, label_names, read_labelled
from data.split import stratified_sample, stratified_split
from features import backbone_passes
from files import DataUnavailable, write_atomic
from lrgrid import per_head_loss
from metrics.classification import classification_metrics, matthews_corrcoef
from modes import FeatureSpec, Mode, Source, count_params
from rundir import fingerprint
from tables import results_table

TABLE_KEYS = ["accuracy", "precision", "recall", "f1", "loss"]
PAIR_SEPARATOR = "\n"  # between the two texts of a pair: measured against other encodings in the README


def parse_args(argv=None) -> argparse.Namespace:
    p = flags.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.common_args(p, lr=5e-3, batch_size=16)
    p.add_argument("--task", help=f"GLUE task: {', '.join(glue.TASKS)} (default sst2), or {glue.CUSTOM} for own "
                   "files (the default when --text-column is given)")
    p.add_argument("--data-dir", help="folder with train.tsv and dev.tsv (GLUE layout; MNLI: dev_matched.tsv and "
                   "dev_mismatched.tsv)")
    p.add_argument("--train-file", help="labelled training data (.tsv/.csv/.jsonl)")
    p.add_argument("--eval-file", help="labelled test data (.tsv/.csv/.jsonl); GLUE dev by default")
    p.add_argument("--text-column", help="the text column, or two comma-separated for sentence pairs "
                   "(e.g. premise,hypothesis); default: the task's")
    p.add_argument("--label-column", help="default: the task's (label for own files)")
    p.add_argument("--max-length", type=int, default=256, help="longer sentences are truncated (and counted)")
    p.add_argument("--pooling", choices=["last", "mean"], default="last")
    p.add_argument("--label-names", help="comma list naming the labels in their sorted order (numbers as numbers), "
                   "for predictions, exports and the card; default: the task's names (SST-2: negative,positive)")
    p.add_argument("--label-words", help="--zero-shot: comma list of the LM's answer word for each label, in the "
                   "labels' sorted order (default: the task's)")
    args = flags.parse(p, argv)
    # the effective task and columns go into config.json, for --resume and for predict.py
    args.task = args.task or (glue.CUSTOM if args.text_column else "sst2")
    try:
        task = glue.task(args.task)
    except DataError as e:
        p.error(str(e))
    args.text_column = args.text_column or ",".join(task.text_columns if task else ["sentence"])
    args.label_column = args.label_column or (task.label_column if task else "label")
    columns = text_columns(args.text_column)
    if len(columns) > 2 or not all(columns) or (task and len(columns) != len(task.text_columns)):
        p.error(f"--text-column {args.text_column}: " + (f"{args.task} reads {len(task.text_columns)} text column(s)"
                if task else "one column, or two comma-separated for sentence pairs"))
    if args.pooling == "mean" and (args.export or args.push_full):
        p.error("--pooling mean cannot be exported: LlamaForSequenceClassification reads the last token, so the "
                "export would disagree with the run; use --pooling last, or keep the run folder's head")
    return args


def text_columns(flag: str) -> tuple[str, ...]:
    """--text-column: one column, or a pair of them ("premise,hypothesis")."""
    return tuple(c.strip() for c in flag.split(","))


@dataclass
class Split:
    """The labelled data: the training file split into train/validation (stratified), and the test sets ("test",
    and for MNLI "test_mismatched"), with labels as class indices into names."""
    train_all: Labelled
    tests: dict[str, Labelled]
    names: list[str]  # the label values, sorted
    display: list[str]  # what users read for them (--label-names, or the task's names such as SST-2's)
    y_all: list[int]
    y_tests: dict[str, list[int]]
    train_idx: list[int]
    val_idx: list[int]

    def label_counts(self) -> dict[str, list[int]]:
        """How often each label occurs in each part: train, validation and every test set."""
        parts = {"train": [self.y_all[i] for i in self.train_idx], "validation": [self.y_all[i] for i in self.val_idx],
                 **self.y_tests}
        return {name: [y.count(i) for i in range(len(self.names))] for name, y in parts.items()}


def load_data(args, task: Task | None) -> tuple[Labelled, dict[str, Labelled]]:
    """(train, {test split: test set}) from flags, or the GLUE task's files fetched into the cache; with
    --max-train-examples / --max-eval-examples, stratified seeded samples of them (sample)."""
    tests = task.tests if task else (("test", None, "dev.tsv"),)
    if args.data_dir:
        train_path = Path(args.data_dir) / "train.tsv"
        test_paths = {split: Path(args.data_dir) / file for split, _, file in tests}
    elif task is None and not (args.train_file and args.eval_file):
        raise DataError(f"--task {glue.CUSTOM}: own data needs --train-file and --eval-file, or --data-dir")
    else:
        hint = (" (offline? try `--model smollm2-135m --data-dir data/samples/sst2`, or `--task qnli --data-dir "
                "data/samples/qnli_squad`)")
        try:
            train_path = args.train_file or fetch_file(task.train)
            # a given --eval-file is the test set; the task's other test sets go with its own files
            test_paths = {"test": args.eval_file} if args.eval_file else \
                {split: fetch_file(name) for split, name, _ in tests}
        except DataUnavailable as e:
            raise DataUnavailable(str(e) + hint) from None
    columns, fieldnames = text_columns(args.text_column), task.fieldnames if task else None
    return (sample(read_labelled(train_path, columns, args.label_column, fieldnames), args.max_train_examples,
                   args.seed),
            {split: sample(read_labelled(path, columns, args.label_column, fieldnames), args.max_eval_examples,
                           args.seed) for split, path in test_paths.items()})


def sample(data: Labelled, n: int | None, seed: int) -> Labelled:
    """At most n rows, each label keeping its share (data.split.stratified_sample), in file order."""
    keep = stratified_sample(data.labels, n, seed)
    if len(keep) == len(data.labels):
        return data
    return Labelled([data.texts[i] for i in keep], [data.labels[i] for i in keep], data.path)


def test_set_names(args, task: Task | None) -> dict[str, str]:
    """Which data each test set is, read in load_data's order (--data-dir first): a GLUE task's (glue.test_set_name;
    MRPC's differs by where its data comes from), or the file it was read from."""
    if args.eval_file and not args.data_dir:
        return {"test": str(args.eval_file)}
    if not task:
        return {"test": str(Path(args.data_dir) / "dev.tsv")}
    return {split: glue.test_set_name(name, file, fetched=not args.data_dir) for split, name, file in task.tests}


def class_names(train_all: Labelled, task: Task | None) -> list[str]:
    """The label values in class-id order: a GLUE task's (its ids on the Hub, so an export's ids score against
    nyu-mll/glue's integer labels), else sorted (label_names)."""
    names = label_names(train_all)
    return list(task.values) if task and set(names) <= set(task.values) else names


def split_data(train_all: Labelled, tests: dict[str, Labelled], val_fraction: float, seed: int,
               given_names: str | None, task: Task | None) -> Split:
    names = class_names(train_all, task)
    y_all = encode_labels(train_all, names)
    y_tests = {split: encode_labels(test, names) for split, test in tests.items()}  # refuses unknown test labels
    train_idx, val_idx = stratified_split(train_all.labels, val_fraction, seed)
    if not train_idx or not val_idx:
        raise DataError(f"{train_all.path}: {len(train_idx) + len(val_idx)} rows are too few for a training and a "
                        f"validation split at --val-fraction {val_fraction}; add rows or change --val-fraction")
    return Split(train_all, tests, names, display_names(names, given_names, task), y_all, y_tests, train_idx,
                 val_idx)


def display_names(labels: list[str], given: str | None = None, task: Task | None = glue.TASKS["sst2"]) -> list[str]:
    """The labels' names as users read them: --label-names, the task's names for its label values (SST-2's 0/1 by
    default: negative/positive), or the values."""
    if given:
        names = [n.strip() for n in given.split(",")]
        if len(names) != len(labels) or len(set(names)) != len(names) or not all(names):
            raise DataError(f"--label-names {given}: needs {len(labels)} distinct names, one per label "
                            f"({', '.join(labels)} in this order)")
        return names
    return list(task.names) if task and tuple(labels) == task.values else list(labels)


def zero_shot_setup(task: Task | None, labels: list[str], label_words: str | None, pairs: bool
                    ) -> tuple[glue.Prompt, list[str]]:
    """(prompt, the answer word of each label) for --zero-shot: the task's, or --label-words."""
    if label_words:
        words = [" " + w.strip() for w in label_words.split(",")]
        if len(words) != len(labels) or not all(w.strip() for w in words):
            raise DataError(f"--label-words {label_words}: needs {len(labels)} words, one per label "
                            f"({', '.join(labels)} in this order)")
        return (task.prompt if task else glue.custom_prompt(words, pairs)), words
    known = {**dict(zip(task.values, task.words)), **dict(zip(task.names, task.words))} if task else {}
    missing = [label for label in labels if label not in known]
    if missing:
        raise DataError(f"--zero-shot: no answer word for the label(s) {missing} of {task.name if task else 'own'} "
                        f"data; pass --label-words, a word per label ({', '.join(labels)} in this order)")
    return task.prompt, [known[label] for label in labels]


def pair_template(tokenizer) -> None:
    """Make the (fast) tokenizer encode a pair (a, b) as a + PAIR_SEPARATOR + b, inside the specials it puts
    around one text (Llama 3: <|begin_of_text|>; SmolLM2: none): a TemplateProcessing post-processor, which
    save_pretrained writes into tokenizer.json, so an export, and pipeline(...)({"text": a, "text_pair": b}),
    encode pairs exactly as training did. Idempotent. (It replaces a Sequence post-processor such as Llama 3's
    ByteLevel + template too: ByteLevel only adjusts character offsets, which classification does not read.)"""
    from tokenizers.processors import TemplateProcessing
    probe, single = tokenizer("x", add_special_tokens=False)["input_ids"], tokenizer("x")["input_ids"]
    at = next(i for i in range(len(single)) if single[i:i + len(probe)] == probe)
    before, after = single[:at], single[at + len(probe):]
    sep = tokenizer(PAIR_SEPARATOR, add_special_tokens=False)["input_ids"]
    name = {i: tokenizer.convert_ids_to_tokens(i) for i in before + after}
    sep_name = "".join(tokenizer.convert_ids_to_tokens(sep))
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=[name[i] for i in before] + ["$A"] + [name[i] for i in after],
        pair=[name[i] for i in before] + ["$A", sep_name, "$B:1"] + [f"{name[i]}:1" for i in after],
        special_tokens=[(t, i) for i, t in name.items()] + [{"id": sep_name, "ids": sep,
                                                             "tokens": tokenizer.convert_ids_to_tokens(sep)}])


def tokenize(tokenizer, texts: list, max_length: int, name: str = "") -> list[list[int]]:
    """Token ids of at most max_length; how many texts were cut is said (for the named split). Texts are strings
    (cut at the end), or (first, second) pairs, which the tokenizer encodes with PAIR_SEPARATOR between them
    (pair_template) and cuts as transformers' truncation="longest_first" does (the longer text loses tokens
    first, so both texts and the separator survive): what pipeline(..., truncation=True) does with an export."""
    pairs = bool(texts) and isinstance(texts[0], tuple)
    if pairs:
        pair_template(tokenizer)
        ids = tokenizer([a for a, _ in texts], [b for _, b in texts])["input_ids"]
    else:
        ids = tokenizer(texts)["input_ids"]
    cut = [i for i, s in enumerate(ids) if len(s) > max_length]
    if name and cut:
        print(f"truncated to {max_length} tokens: {len(cut)} {name} {'pairs' if pairs else 'sentences'}")
    if not pairs:
        return [s[:max_length] for s in ids]
    if cut:  # only the pairs that need it are encoded again, cut by the tokenizer itself
        again = tokenizer([texts[i][0] for i in cut], [texts[i][1] for i in cut], truncation="longest_first",
                          max_length=max_length)["input_ids"]
        for i, s in zip(cut, again):
            ids[i] = s
    return ids


def cut_texts(tokenizer, texts: list[str], max_tokens: int) -> list[str]:
    """Each text cut after its first max_tokens tokens, at a character boundary (the tokenizer's offsets): what
    a prompt holds of a text, so the prompt's own words after it are never what a cut removes."""
    offsets = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [t if len(o) <= max_tokens else t[:o[max_tokens - 1][1]] for t, o in zip(texts, offsets)]


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
                 batch_size: int, max_tokens: int, seed: int, metrics: tuple[str, ...], device):
        self.head, self.split, self.sources, self.seqs = head, split, sources, seqs
        self.batch_size, self.max_tokens, self.seed, self.metrics = batch_size, max_tokens, seed, metrics
        self.y_all = torch.tensor(split.y_all, device=device)
        self.y_tests = {name: torch.tensor(y, device=device) for name, y in split.y_tests.items()}

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
        return per_head_loss(F.cross_entropy, self.head(self.sources["train"](rows)).float(), self.y_all[rows])

    def logits(self, split: str, idx: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return self.head(self.sources[split].all(idx, [len(s) for s in self.seqs[split]], self.max_tokens))

    def validate(self) -> dict:
        row = scores(self.logits("train", self.split.val_idx), self.y_all[self.split.val_idx], self.metrics)
        return {"val_loss": row.pop("loss"), **row}

    def test(self, split: str) -> tuple[dict, torch.Tensor]:
        logits = self.logits(split, list(range(len(self.y_tests[split]))))
        return scores(logits, self.y_tests[split], self.metrics), logits


def scores(logits: torch.Tensor, labels: torch.Tensor, metrics: tuple[str, ...] = ()) -> dict:
    """Loss and classification metrics; binary tasks report the positive (second) class. Matthews correlation
    ("mcc") when the task's metrics name it (CoLA)."""
    kw = {"positive_label": 1} if logits.shape[-1] == 2 else {"average": "macro"}
    y, preds = labels.tolist(), logits.argmax(-1).tolist()
    return {"loss": F.cross_entropy(logits.float(), labels).item(), **classification_metrics(y, preds, **kw),
            **({"mcc": matthews_corrcoef(y, preds)} if "mcc" in metrics else {})}


def zero_shot(lm, tokenizer, texts: list, prompt: glue.Prompt, words: list[str], max_length: int, max_tokens: int
              ) -> torch.Tensor:
    """Class log-likelihoods of the LM's answer word for each label after the prompt (lm-eval-harness's, for the
    GLUE tasks), which the text (pair) fills."""
    words = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    parts = [t if isinstance(t, tuple) else (t,) for t in texts]
    cut = [cut_texts(tokenizer, [p[k] for p in parts], max_length) for k in range(len(parts[0]))]
    if n_cut := sum(a != b for k, column in enumerate(cut) for a, b in zip(column, (p[k] for p in parts))):
        print(f"zero-shot: {n_cut} texts cut to {max_length} tokens (--max-length); the prompt around them is whole")
    prompts = tokenize(tokenizer, [prompt.fill(*row) for row in zip(*cut)], 10**9)
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
    for name, counts in split.label_counts().items():
        balance = ", ".join(f"{n}: {c}" for n, c in zip(split.names, counts))
        print(f"{name:>10}: {sum(counts):6d} sentences ({balance})")


def write_predictions(path: Path, texts: list, labels: list[int], logits: torch.Tensor, names: list[str]) -> None:
    """One JSON line per test example, in file order: its text(s), true and predicted label (as users read them)
    and the predicted label's probability; report.py lists the most confident errors from it."""
    probability, predicted = logits.float().softmax(-1).max(-1)
    rows = ({"index": i, "text": t if isinstance(t, str) else list(t), "label": names[y], "predicted": names[k],
             "probability": p} for i, (t, y, k, p) in enumerate(zip(texts, labels, predicted.tolist(),
                                                                     probability.tolist())))
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def main(argv=None) -> int:
    args = parse_args(argv)
    mode = flags.mode(args)
    task = glue.task(args.task)
    if args.count_params_only:  # the head has one row per label: the task's, or those in the own training file
        labels = len(task.names) if task else len(class_names(load_data(args, task)[0], task))
        return count_params(args.model, mode, lambda hidden: model.cls_head(hidden, labels))
    device = flags.start(args)

    # 1. data: the training file split into train/validation, and the test sets; the zero-shot prompt
    split = split_data(*load_data(args, task), args.val_fraction, args.seed, args.label_names, task)
    print_split(split)
    pairs = isinstance(split.train_all.texts[0], tuple)
    prompt, words = zero_shot_setup(task, split.names, args.label_words, pairs) if args.zero_shot else (None, None)
    metrics = task.metrics if task else ("accuracy", "f1")
    digest = fingerprint(split.train_all.texts, split.train_all.labels,
                         *[x for test in split.tests.values() for x in (test.texts, test.labels)])
    run = flags.open_run(args, args.task, mode, digest, split.names)

    # 2. the backbone, and the features each split reads (cached while the backbone is frozen)
    t0 = time.perf_counter()
    dtype = model.pick_dtype(device, args.dtype)
    lm, tokenizer = model.load_backbone(args.model, device, dtype)
    print(f"backbone {args.model} on {device} in {lm.dtype} ({time.perf_counter() - t0:.1f} s)")
    seqs = {name: tokenize(tokenizer, data.texts, args.max_length, name)
            for name, data in (("train", split.train_all), *split.tests.items())}
    t0 = time.perf_counter()
    specs = {name: sentence_spec(name, s, tokenizer.pad_token_id, args.pooling) for name, s in seqs.items()}
    for spec in specs.values():
        print(mode.cache_note(spec))
    sources = {name: mode.source(lm, spec, flags.passes(args)) for name, spec in specs.items()}
    feature_s = time.perf_counter() - t0

    # 3. before (an untrained head) and zero-shot, on the base model as loaded: mode.prepare below changes it
    torch.manual_seed(args.seed)
    clf = Classifier(model.cls_head(lm.config.hidden_size, len(split.names)).to(device), split, sources, seqs,
                     args.batch_size, args.max_tokens, args.seed, metrics, device)
    results = {name: {"before": clf.test(name)[0]} for name in split.tests}
    if args.zero_shot:
        for name, test in split.tests.items():
            lls = zero_shot(lm, tokenizer, test.texts, prompt, words, args.max_length, args.max_tokens)
            results[name]["zero_shot"] = scores(lls.to(device), clf.y_tests[name], metrics)

    # 4. what trains
    mode.prepare(lm.model)
    print(f"training {mode.describe()}")

    # 5. fit, 6. after
    t0 = time.perf_counter()
    cfg = flags.train_args(args, metrics[0])
    clf.head = flags.trained_head(cfg, clf.head)
    fitted = loop.fit(clf.head, lm.model, clf.epoch_batches, clf.loss, clf.validate, cfg, run, device,
                      mode.amp(device))
    clf.head = fitted.head
    logits = {}
    for name in split.tests:
        results[name]["after"], logits[name] = clf.test(name)
    params = model.param_report(lm.model, clf.head)
    keys = TABLE_KEYS + [m for m in metrics if m not in TABLE_KEYS]
    for name, result in results.items():
        print(f"\n{name.replace('_', ' ')} set ({len(clf.y_tests[name])} sentences)\n{results_table(result, keys)}")
    print("\nparameters: " + ", ".join(f"{k} {v:,}" for k, v in params.items()))

    # 7. save and publish (rank 0)
    timing = {"features_s": feature_s, "train_s": time.perf_counter() - t0,
              "tokens": sum(len(s) for v in seqs.values() for s in v)}
    info = summary(args, mode, split, results, metrics, test_set_names(args, task),
                   confusion(logits["test"].argmax(-1), clf.y_tests["test"], len(split.names)), params, fitted,
                   timing, flags.environment(device))
    if not distributed.is_main():
        return 0
    base, export = model.resolve_model(args.model), None
    run.save_trained(clf.head, lm.model, mode, "cls", base)
    for name, test in split.tests.items():
        write_predictions(run.file(f"{name}_preds.jsonl"), test.texts, split.y_tests[name], logits[name],
                          split.display)
    if args.export:  # with what predict.py needs to read inputs as this run did
        settings = {"task": args.task, "model": args.model, "dtype": model.dtype_name(dtype),
                    "max_length": args.max_length, "pooling": args.pooling, "text_column": args.text_column,
                    "label_names": split.display}
        export = model.export(Path(args.export), args.model, "cls", clf.head, tokenizer, settings, split.display,
                              lm.model, mode.peft(lm.model, clf.head, "cls", base) if args.peft else None)
    return hub.publish(run, info, flags.push(args), export)


def summary(args, mode: Mode, split: Split, results: dict, metrics: tuple[str, ...], test_sets: dict[str, str],
            matrix: list, params: dict, fitted: loop.Fitted, timing: dict, environment: dict) -> dict:
    """metrics.json: what ran, on what, and every number it produced; "metrics" holds the test set's, and
    "more_tests" any other test set's (MNLI's mismatched dev set); "test_sets" says which data each is."""
    others = {name: r for name, r in results.items() if name != "test"}
    return {"task": args.task, "mode": mode.name, "base_model": args.model, "trained": mode.describe(),
            "command": shlex.join(["python"] + sys.argv), "resolved_model": model.resolve_model(args.model),
            "text_columns": list(text_columns(args.text_column)),
            "labels": split.names, "label_names": split.display, "task_metrics": list(metrics),
            "metrics": results["test"], **({"more_tests": others} if others else {}), "test_sets": test_sets,
            "confusion": matrix, "label_counts": split.label_counts(), "params": params, "epochs": fitted.rows,
            **loop.fit_record(fitted),
            "split": {"train": len(split.train_idx), "validation": len(split.val_idx),
                      "test": len(split.y_tests["test"]), **{name: len(split.y_tests[name]) for name in others},
                      "seed": args.seed, "stratify_by": "label",
                      "max_train_examples": args.max_train_examples, "max_eval_examples": args.max_eval_examples},
            "timing": timing, "environment": environment}


if __name__ == "__main__":
    flags.run(main)
