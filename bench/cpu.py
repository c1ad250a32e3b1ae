"""Ours vs three peers on this machine's CPU, with the embedded SmolLM2-135M on the bundled data.

    python bench/cpu.py                                   # SST-2 2,000 train / 872 test (all of the sample), SQuAD 64
    python bench/cpu.py --n-train 16 --n-test 16 --n-qa 8 # a smoke run (tests/test_bench.py)

SST-2 (data/samples/sst2, a seeded sample of --n-train train rows and --n-test dev rows):
  ours     train_cls.main(...) for 3 epochs, end to end (load, tokenize, features, head, test eval, run files),
           with a fresh LLAMA_HEADS_CACHE so the feature cache starts cold; then again, warm.
  peer     transformers Trainer + LlamaForSequenceClassification, fp32, batch 8, DataCollatorWithPadding,
           backbone frozen, 3 epochs on the same train rows, then Trainer.predict on the same test rows.
  careful  the same Trainer as a careful user sets it: the frozen backbone in bf16 (where the CPU has it), the head
           in fp32 under bf16 autocast, group_by_length, batch --careful-batch (64), 3 epochs.
  features AutoModel in bf16, one inference-mode pass in length-sorted batches of 64, last-token vectors, then an
           L-BFGS logistic regression (L2 picked on ours' validation split) -- bench/peers.py.
SQuAD (data/samples/squad_train.json, a seeded sample of --n-qa questions, windows of 384 tokens, stride 128):
  ours     train_qa's pipeline on those windows: backbone features once (cold cache), then the span head for 3
           epochs (loop.fit) -- no evaluation;
  peer     Trainer + LlamaForQuestionAnswering, fp32, batch 8, every window padded to 384, backbone frozen:
           1 epoch timed, x3 for 3 epochs;
  careful  as for SST-2 (windows padded per batch, not to 384), 3 epochs timed;
  features the windows' context and null rows once (AutoModel, bf16), then a linear span head, AdamW, 3 epochs.
  SQuAD's score is the span loss on the training windows in the last epoch (or the Trainer's last logged steps).
The project's feature pass (features.backbone_features, as train_cls runs it) over the same SST-2 rows is measured
against the bf16 matmul ceiling at SmolLM2-135M's projection shapes (8,192-token batches), in --rounds passes, a
slice of the ceiling timed before each batch (the ceiling moves on a shared machine); the median is reported.
--compiled measures the compiled pass the same way.
Each side runs in its own subprocess (same thread count), one after another. Model conversion is
excluded (done first); model loading is included on every side.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common, peers  # noqa: E402

SST2 = ROOT / "data" / "samples" / "sst2"
SQUAD = ROOT / "data" / "samples" / "squad_train.json"
QA_MAX_LENGTH, QA_STRIDE = 384, 128
PEERS = ("trainer", "careful", "features")
MATMUL_TOKENS = 8192  # rows of each timed projection: train_cls's CPU --max-tokens


def say(*a) -> None:
    print(*a, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m",
                   help="the embedded SmolLM2 (default) or a local Llama folder (tests use a tiny random one)")
    p.add_argument("--n-train", type=int, default=2000, help="SST-2 train rows (of data/samples/sst2/train.tsv)")
    p.add_argument("--n-test", type=int, default=872, help="SST-2 test rows (of dev.tsv)")
    p.add_argument("--n-qa", type=int, default=64, help="SQuAD questions (of data/samples/squad_train.json)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch threads for every side (default: torch's default here)")
    p.add_argument("--peer-lr", type=float, default=1e-3,
                   help="the peer's learning rate (Trainer's default 5e-5 barely moves a new head in 3 epochs)")
    p.add_argument("--careful-batch", type=int, default=64, help="the careful peer's batch size")
    p.add_argument("--careful-lr", type=float, default=8e-3,
                   help="the careful peer's learning rate (--peer-lr scaled with the batch, 64/8)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--skip-qa", action="store_true")
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma list of the peers to run, of {', '.join(PEERS)} "
                   "('' runs none)")
    p.add_argument("--skip-ceiling", action="store_true", help="no matmul ceiling / feature pass measurement")
    p.add_argument("--rounds", type=int, default=3, help="feature passes measured against the ceiling (median "
                   "reported)")
    p.add_argument("--compiled", action="store_true", help="also measure the compiled feature pass (--compile on; "
                   "the compile takes minutes here)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--keep", metavar="DIR", help="keep the work folder (data cuts, logs, runs) here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------- workers (one subprocess each)

def _setup(spec: dict):
    import torch
    torch.set_num_threads(spec["threads"])
    return torch


def worker_ours_cls(spec: dict) -> dict:
    torch = _setup(spec)
    import model
    import train_cls
    run = Path(spec["runs"]) / spec["run_name"]
    t0 = time.perf_counter()
    rc = train_cls.main(["--model", spec["model"], "--train-file", spec["train"], "--eval-file", spec["test"],
                         "--epochs", str(spec["epochs"]), "--seed", str(spec["seed"]), "--runs-dir", spec["runs"],
                         "--run-name", spec["run_name"]])
    wall = time.perf_counter() - t0
    if rc:
        raise SystemExit(f"train_cls.main returned {rc}")
    info = json.loads((run / "metrics.json").read_text())
    return {"wall_s": wall, "accuracy": info["metrics"]["after"]["accuracy"], "timing": info["timing"],
            "split": info["split"], "dtype": str(model.pick_dtype(torch.device("cpu"))).removeprefix("torch."),
            "train_loss": [r["train_loss"] for r in info["epochs"]]}


def _trainer_setup(spec: dict, torch):
    """(dtype, run_peer keywords) of the Trainer peer: the assignment's (fp32, batch 8) or the careful one."""
    if not spec["careful"]:
        return torch.float32, {}
    import model
    dtype = model.pick_dtype(torch.device("cpu"))
    return dtype, {"batch": spec["careful_batch"], "bf16": dtype == torch.bfloat16, "group_by_length": True,
                   "lr": spec["careful_lr"]}


def worker_peer_cls(spec: dict) -> dict:
    torch = _setup(spec)
    from transformers import DataCollatorWithPadding, LlamaForSequenceClassification
    import model
    from data.labelled import encode_labels, label_names, read_labelled
    dtype, how = _trainer_setup(spec, torch)
    t0 = time.perf_counter()
    tok = model.load_tokenizer(spec["model"])
    train, test = read_labelled(spec["train"]), read_labelled(spec["test"])
    names = label_names(train)
    m = LlamaForSequenceClassification.from_pretrained(spec["model"], num_labels=len(names), dtype=dtype)
    m.config.pad_token_id = tok.pad_token_id
    common.frozen_backbone(m, "score", dtype)

    def items(data):
        enc = tok(data.texts, truncation=True, max_length=256)
        return [{"input_ids": ids, "attention_mask": mask, "labels": y}
                for ids, mask, y in zip(enc["input_ids"], enc["attention_mask"], encode_labels(data, names))]
    train_items, test_items = items(train), items(test)
    out = common.run_peer(m, train_items, DataCollatorWithPadding(tok), device=torch.device("cpu"),
                          epochs=spec["epochs"], seed=spec["seed"], eval_items=test_items,
                          **{"lr": spec["peer_lr"], **how})
    wall = time.perf_counter() - t0
    acc = (torch.as_tensor(out.pop("logits")).argmax(-1) == torch.as_tensor(out.pop("labels"))).float().mean().item()
    return {**out, "wall_s": wall, "accuracy": acc, "train_rows": len(train_items),
            "dtype": str(dtype).removeprefix("torch.")}


def worker_features_cls(spec: dict) -> dict:
    torch = _setup(spec)
    from transformers import AutoModel
    import model
    from data.labelled import encode_labels, label_names, read_labelled
    t0 = time.perf_counter()
    tok = model.load_tokenizer(spec["model"])
    train, test = read_labelled(spec["train"]), read_labelled(spec["test"])
    names = label_names(train)
    dtype = model.pick_dtype(torch.device("cpu"))
    backbone = AutoModel.from_pretrained(spec["model"], dtype=dtype).eval()
    load_s = time.perf_counter() - t0
    train_ids, test_ids = (tok(d.texts, truncation=True, max_length=256)["input_ids"] for d in (train, test))
    out = peers.features_once_cls(backbone, tok.pad_token_id, train_ids, encode_labels(train, names), test_ids,
                                  encode_labels(test, names), spec["val_fraction"], spec["seed"])
    return {**out, "wall_s": time.perf_counter() - t0, "load_s": load_s, "dtype": str(dtype).removeprefix("torch.")}


def worker_ours_qa(spec: dict) -> dict:
    torch = _setup(spec)
    import flags
    import loop
    import model
    import train_qa
    from data.squad import make_windows
    from data.squad_json import load_squad
    from modes import Mode
    from rundir import RunDir
    args = train_qa.parse_args(["--model", spec["model"], "--epochs", str(spec["epochs"]), "--seed", str(spec["seed"]),
                                "--runs-dir", spec["runs"], "--max-length", str(QA_MAX_LENGTH),
                                "--doc-stride", str(QA_STRIDE), "--lr", str(train_qa.LR)])
    device = torch.device("cpu")
    t0 = time.perf_counter()
    lm, tok = model.load_backbone(args.model, device, model.pick_dtype(device, args.dtype))
    examples = train_qa.subsample(load_squad(spec["squad"]), spec["n_qa"], spec["seed"])
    windows = make_windows(examples, tok, args.max_length, args.doc_stride, args.max_question_tokens)
    t1 = time.perf_counter()
    source = Mode().source(lm, train_qa.window_spec("train", windows, tok.pad_token_id, cache=True),
                           flags.passes(args))
    feature_s = time.perf_counter() - t1
    torch.manual_seed(args.seed)
    head = model.qa_head(lm.config.hidden_size).to(device)

    def epoch_batches(epoch):
        order = train_qa.batches(windows, args.batch_size)
        perm = torch.randperm(len(order), generator=torch.Generator().manual_seed(args.seed + epoch))
        return [order[i] for i in perm]

    run_dir = Path(spec["runs"]) / "ours-qa"
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = loop.fit(head, lm.model, epoch_batches, lambda idx: train_qa.span_loss(head, source, windows, idx),
                    lambda: {}, flags.train_args(args, "f1"), RunDir(run_dir), device, amp=False).rows
    end = time.perf_counter()
    return {"wall_s": end - t0, "feature_s": feature_s, "head_s": end - t1 - feature_s, "windows": len(windows),
            "questions": len(examples), "tokens": sum(len(w.input_ids) for w in windows), "cached": source.stored,
            "dtype": str(lm.dtype).removeprefix("torch."), "train_loss": [r["train_loss"] for r in rows]}


def _qa_windows(spec: dict, tok):
    import train_qa
    from data.squad import make_windows
    from data.squad_json import load_squad
    examples = train_qa.subsample(load_squad(spec["squad"]), spec["n_qa"], spec["seed"])
    return make_windows(examples, tok, QA_MAX_LENGTH, QA_STRIDE, 64)


def worker_peer_qa(spec: dict) -> dict:
    """The assignment's peer pads every window to 384 and is timed for 1 epoch (x epochs); the careful one pads
    each batch to its longest window and runs every epoch."""
    torch = _setup(spec)
    from transformers import AutoModel, LlamaForQuestionAnswering, default_data_collator
    import model
    dtype, how = _trainer_setup(spec, torch)
    t0 = time.perf_counter()
    tok = model.load_tokenizer(spec["model"])
    backbone = AutoModel.from_pretrained(spec["model"], dtype=dtype)
    config = backbone.config
    config.pad_token_id = tok.pad_token_id
    m = LlamaForQuestionAnswering(config)
    # Its backbone attribute is `transformer`: from_pretrained on a plain Llama folder would leave it random.
    m.base_model.load_state_dict(backbone.state_dict())
    del backbone
    common.frozen_backbone(m, "qa_outputs", dtype)
    windows = _qa_windows(spec, tok)
    labels = [{"start_positions": w.start_position, "end_positions": w.end_position} for w in windows]
    if spec["careful"]:
        items, collate = [{"input_ids": w.input_ids, **y} for w, y in zip(windows, labels)], \
            common.dynamic_pad(tok.pad_token_id)
    else:
        items, collate = [{**common.pad_to(w.input_ids, QA_MAX_LENGTH, tok.pad_token_id), **y}
                          for w, y in zip(windows, labels)], default_data_collator
    setup_s = time.perf_counter() - t0
    epochs = spec["epochs"] if spec["careful"] else 1
    out = common.run_peer(m, items, collate, device=torch.device("cpu"), epochs=epochs, seed=spec["seed"],
                          **{"lr": spec["peer_lr"], **how})
    return {**out, "setup_s": setup_s, "wall_s": setup_s + spec["epochs"] / epochs * out["train_s"],
            "windows": len(windows), "epoch_s": out["train_s"] / epochs, "dtype": str(dtype).removeprefix("torch.")}


def worker_features_qa(spec: dict) -> dict:
    torch = _setup(spec)
    from transformers import AutoModel
    import model
    t0 = time.perf_counter()
    tok = model.load_tokenizer(spec["model"])
    dtype = model.pick_dtype(torch.device("cpu"))
    backbone = AutoModel.from_pretrained(spec["model"], dtype=dtype).eval()
    windows = _qa_windows(spec, tok)
    t1 = time.perf_counter()
    rows = peers.span_rows(backbone, [w.input_ids for w in windows], [w.context_start for w in windows],
                           tok.pad_token_id)
    t2 = time.perf_counter()
    losses = peers.train_span_head(rows, [w.start_position - w.context_start for w in windows],
                                   [w.end_position - w.context_start for w in windows], epochs=spec["epochs"],
                                   lr=spec["qa_lr"], seed=spec["seed"])
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "feature_s": t2 - t1, "head_s": wall - (t2 - t0), "windows": len(windows),
            "train_loss": losses, "dtype": str(dtype).removeprefix("torch.")}


def worker_ceiling(spec: dict) -> dict:
    """The project's feature pass (train_cls's batches, pooling and --max-tokens over the bench's SST-2 rows) against
    the bf16 matmul ceiling at the backbone's projection shapes, measured interleaved: a ceiling slice before every
    batch, so both see the same machine (on this shared VM the ceiling moves 0.8-2.2 TFLOP/s within an hour, and a
    ceiling timed before a 20 s pass drifted from it). A first pass builds oneDNN's kernels for every batch shape;
    with spec["compiled"], the compiled pass (--compile, its compile timed) runs each round too."""
    t_start = time.perf_counter()
    torch = _setup(spec)
    import features
    import model
    import train_cls
    from data.labelled import read_labelled
    device = torch.device("cpu")
    lm, tok = model.load_backbone(spec["model"], device, model.pick_dtype(device))
    c = lm.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    q, kv = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
    shapes = {"q": (c.hidden_size, q), "k": (c.hidden_size, kv), "v": (c.hidden_size, kv), "o": (q, c.hidden_size),
              "gate": (c.hidden_size, c.intermediate_size), "up": (c.hidden_size, c.intermediate_size),
              "down": (c.intermediate_size, c.hidden_size)}
    args = train_cls.parse_args(["--model", spec["model"]])
    seqs = [s for f in (spec["train"], spec["test"])
            for s in train_cls.tokenize(tok, read_labelled(f).texts, args.max_length)]
    pick = train_cls.sentence_spec("bench", seqs, tok.pad_token_id, args.pooling).pick
    tokens = sum(map(len, seqs))
    weights = sum(p.numel() for p in lm.model.parameters()) - lm.model.embed_tokens.weight.numel()
    # Q K^T and the weighted sum of V, each 2 * head_dim * heads FLOPs per (query, key) pair a causal pass computes
    attention = 4 * q * c.num_hidden_layers * sum(n * (n + 1) // 2 for n in map(len, seqs))
    flops = 2 * weights * tokens + attention
    sides = {"eager": lm.model}
    if spec["compiled"]:
        sides["compiled"] = features.feature_module(lm.model, compile=True)

    def feature_pass(module, ceiling: "Ceiling | None") -> float:
        """Seconds of the pass alone; with `ceiling`, a slice of it is timed before every batch."""
        seconds, t0 = 0.0, time.perf_counter()
        for _ in features.backbone_features(module, seqs, tok.pad_token_id, args.max_tokens, "pass", pick):
            seconds += time.perf_counter() - t0
            if ceiling:
                ceiling.slice()
            t0 = time.perf_counter()
        return seconds + time.perf_counter() - t0
    first = {name: feature_pass(module, None) for name, module in sides.items()}
    rounds = {name: [] for name in sides}
    for _ in range(spec["rounds"]):
        for name, module in sides.items():
            ceiling = Ceiling(torch, shapes, spec["matmul_tokens"], lm.dtype)
            seconds = feature_pass(module, ceiling)
            tflops, measured = flops / seconds / 1e12, ceiling.result()
            rounds[name].append({"ceiling": measured, "wall_s": seconds, "tok_s": tokens / seconds,
                                 "tflops": tflops, "share": tflops / measured["mix_tflops"]})
    medians = {name: sorted(r, key=lambda r: r["share"])[len(r) // 2] for name, r in rounds.items()}
    return {"sides": {name: {**medians[name], "rounds": rounds[name], "first_s": first[name]} for name in sides},
            "tokens": tokens, "sentences": len(seqs), "attention_share": attention / flops,
            "max_tokens": args.max_tokens, "matmul_tokens": spec["matmul_tokens"],
            "dtype": str(lm.dtype).removeprefix("torch."), "wall_s": time.perf_counter() - t_start}


class Ceiling:
    """F.linear of a (tokens, in) batch by each of a block's (out, in) projection weights, in `dtype`, timed a slice
    (one product each) at a time after a warm-up slice: TFLOP/s per projection and for the block's mix (all FLOPs /
    all time)."""

    def __init__(self, torch, shapes: dict[str, tuple[int, int]], tokens: int, dtype):
        import torch.nn.functional as F
        self.linear, self.tokens, self.shapes = F.linear, tokens, shapes
        self.data = {name: (torch.randn(tokens, i, dtype=dtype), torch.randn(o, i, dtype=dtype))
                     for name, (i, o) in shapes.items()}
        self.seconds, self.slices = dict.fromkeys(shapes, 0.0), 0
        for x, w in self.data.values():
            self.linear(x, w)

    def slice(self) -> None:
        for name, (x, w) in self.data.items():
            t0 = time.perf_counter()
            self.linear(x, w)
            self.seconds[name] += time.perf_counter() - t0
        self.slices += 1

    def result(self) -> dict:
        flops = {name: 2 * self.tokens * i * o * self.slices for name, (i, o) in self.shapes.items()}
        return {"tokens": self.tokens, "slices": self.slices,
                "mix_tflops": sum(flops.values()) / sum(self.seconds.values()) / 1e12,
                "projections": {name: flops[name] / self.seconds[name] / 1e12 for name in self.shapes}}


WORKERS = {"ours-cls": worker_ours_cls, "peer-cls": worker_peer_cls, "features-cls": worker_features_cls,
           "ours-qa": worker_ours_qa, "peer-qa": worker_peer_qa, "features-qa": worker_features_qa,
           "ceiling": worker_ceiling}


# ---------------------------------------------------------------- the parent

def write_cut(src: Path, dst: Path, n: int, seed: int) -> int:
    """A seeded sample of n rows (file order kept) of a labelled TSV."""
    from data.labelled import read_labelled
    data = read_labelled(src)
    keep = sorted(random.Random(seed).sample(range(len(data.texts)), min(n, len(data.texts))))
    dst.write_text("sentence\tlabel\n" + "".join(f"{data.texts[i]}\t{data.labels[i]}\n" for i in keep))
    return len(keep)


def launch(name: str, spec: dict, work: Path, cache: Path) -> dict:
    spec_path, result = work / f"{spec['tag']}.spec.json", work / f"{spec['tag']}.result.json"
    spec_path.write_text(json.dumps(spec))
    threads = str(spec["threads"])
    env = {**os.environ, "LLAMA_HEADS_CACHE": str(cache), "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    log = work / f"{spec['tag']}.log"
    say(f"  {spec['tag']}: running (log {log})")
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, __file__, "--worker", name, "--spec", str(spec_path),
                               "--result", str(result)], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode or not result.exists():
        tail = log.read_text()[-4000:]
        raise RuntimeError(f"{spec['tag']} failed (exit {proc.returncode}); last lines of {log}:\n{tail}")
    out = json.loads(result.read_text())
    out["load"] = os.getloadavg()[0]  # a shared machine: the 1-minute load average as the side ends
    say(f"  {spec['tag']}: {out['wall_s']:.1f} s (load {out['load']:.1f})")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(Path(args.spec).read_text())
        out = WORKERS[args.worker](spec)
        Path(args.result).write_text(json.dumps(out, default=str))
        return 0
    import torch
    import model
    threads = args.threads or torch.get_num_threads()
    folder = model.resolve_model(args.model)  # the embedded model is converted here, outside every timing
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    if args.keep:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    n_train = write_cut(SST2 / "train.tsv", work / "train.tsv", args.n_train, args.seed)
    n_test = write_cut(SST2 / "dev.tsv", work / "test.tsv", args.n_test, args.seed)
    import train_qa
    if args.rounds < 1:
        raise SystemExit(f"--rounds {args.rounds}: must be at least 1")
    chosen = [name for name in args.peers.split(",") if name]
    if unknown := set(chosen) - set(PEERS):
        raise SystemExit(f"--peers: unknown {', '.join(sorted(unknown))}; pick from {', '.join(PEERS)}")
    base = {"model": folder, "train": str(work / "train.tsv"), "test": str(work / "test.tsv"), "squad": str(SQUAD),
            "n_qa": args.n_qa, "epochs": args.epochs, "seed": args.seed, "threads": threads, "peer_lr": args.peer_lr,
            "runs": str(work / "runs"), "careful": False, "careful_batch": args.careful_batch,
            "careful_lr": args.careful_lr,
            "val_fraction": train_qa.parse_args([]).val_fraction, "qa_lr": train_qa.LR,
            "matmul_tokens": MATMUL_TOKENS, "rounds": args.rounds, "compiled": args.compiled}
    model_name = "SmolLM2-135M" if args.model == "smollm2-135m" else Path(folder).name
    say(f"bench/cpu.py: {model_name} on {threads} threads; SST-2 {n_train} train / {n_test} test rows, "
        f"SQuAD {args.n_qa} questions; {args.epochs} epochs; peers {', '.join(chosen) or 'none'}; work folder {work}")
    res = {"threads": threads, "n_train": n_train, "n_test": n_test, "n_qa": args.n_qa, "epochs": args.epochs}
    t_all = time.perf_counter()
    peer_workers = {"trainer": ("peer", {}), "careful": ("peer", {"careful": True}), "features": ("features", {})}
    tasks = ("cls",) if args.skip_qa else ("cls", "qa")
    for task in tasks:
        res[f"ours_{task}"] = launch(f"ours-{task}", {**base, "tag": f"ours-{task}", "run_name": "ours-cold"}, work,
                                     work / f"cache-{task}")
        if task == "cls":
            res["ours_cls_warm"] = launch("ours-cls", {**base, "tag": "ours-cls-warm", "run_name": "ours-warm"}, work,
                                          work / "cache-cls")
        for name in chosen:
            worker, extra = peer_workers[name]
            res[f"{name}_{task}"] = launch(f"{worker}-{task}", {**base, **extra, "tag": f"{name}-{task}"}, work,
                                           work / "cache-peer")
    if not args.skip_ceiling:
        res["ceiling"] = launch("ceiling", {**base, "tag": "ceiling"}, work, work / "cache-peer")
    res["total_s"] = time.perf_counter() - t_all

    rows, summary = result_rows(res, args, chosen)
    res["rows"], res["summary"] = rows, summary
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    say(f"\n## bench/cpu.py: {model_name}, {threads} CPU threads, {args.epochs} epochs, all sides in "
        f"{res['total_s']:.0f} s (examples/s = train rows (SST-2) or windows (SQuAD) x epochs / wall s; "
        f"x faster = peer wall s / ours (cold) wall s)")
    say(common.table(rows, ["task", "side", "wall s", "examples/s", "accuracy", "loss", "x faster", "load", "note"]))
    for line in summary:
        say(line)
    if "ceiling" in res:
        say("\n" + ceiling_table(res["ceiling"]))
    return 0


def result_rows(res: dict, args, chosen: list[str]) -> tuple[list[dict], list[str]]:
    """The table's rows (ours, then each peer with our speed-up over it) and one 'ours / best peer' line per task."""
    e = args.epochs
    rows, summary = [], []
    o, w = res["ours_cls"], res["ours_cls_warm"]
    rows += [{"task": "sst2", "side": f"ours, cold cache ({o['dtype']})", "wall s": o["wall_s"],
              "examples/s": res["n_train"] * e / o["wall_s"], "accuracy": o["accuracy"], "load": o["load"],
              "note": f"features {o['timing']['features_s']:.1f} s, head {o['timing']['train_s']:.1f} s; "
                      f"head trained on {o['split']['train']} rows (+{o['split']['validation']} validation)"},
             {"task": "sst2", "side": "ours, warm cache", "wall s": w["wall_s"],
              "examples/s": res["n_train"] * e / w["wall_s"], "accuracy": w["accuracy"], "load": w["load"],
              "note": f"features {w['timing']['features_s']:.1f} s (read from the cache)"}]
    for task in ("cls", "qa") if "ours_qa" in res else ("cls",):
        ours = res[f"ours_{task}"]
        if task == "qa":
            rows.append({"task": "squad", "side": f"ours, cold cache ({ours['dtype']})", "wall s": ours["wall_s"],
                         "examples/s": ours["windows"] * e / ours["wall_s"], "loss": ours["train_loss"][-1],
                         "load": ours["load"],
                         "note": f"{ours['windows']} windows of {ours['questions']} questions, {ours['tokens']:,} "
                                 f"tokens; features {ours['feature_s']:.1f} s, head {ours['head_s']:.1f} s; "
                                 f"loss {ours['train_loss'][0]:.3f} -> {ours['train_loss'][-1]:.3f}"})
        sides = [peer_row(name, task, res[f"{name}_{task}"], res, args) for name in chosen]
        for row in sides:
            row["x faster"] = row["wall s"] / ours["wall_s"]
        rows += sides
        if sides:
            best = min(sides, key=lambda r: r["wall s"])
            score = (f"accuracy {ours['accuracy']:.3f} vs {best['accuracy']:.3f}" if task == "cls" else
                     f"last-epoch span loss {ours['train_loss'][-1]:.3f} vs {best['loss']:.3f}")
            verdict = "ahead" if best["x faster"] > 1 else "BEHIND"
            summary.append(f"{'sst2' if task == 'cls' else 'squad'}: ours {ours['wall_s']:.1f} s / best peer "
                           f"({best['side']}) {best['wall s']:.1f} s = {best['x faster']:.2f}x, {verdict}; {score}")
    return rows, summary


def peer_row(name: str, task: str, p: dict, res: dict, args) -> dict:
    e = args.epochs
    n = res["n_train"] if task == "cls" else p["windows"]
    row = {"task": "sst2" if task == "cls" else "squad", "wall s": p["wall_s"], "examples/s": n * e / p["wall_s"],
           "load": p["load"]}
    if task == "cls":
        row["accuracy"] = p["accuracy"]
    if name == "features":
        row["side"] = f"features once, AutoModel ({p['dtype']}) + " + \
            ("L-BFGS logistic regression" if task == "cls" else "linear span head")
        if task == "cls":
            row["note"] = (f"load {p['load_s']:.1f} s, features {p['feature_s']:.1f} s, fit {p['fit_s']:.1f} s; "
                           f"L2 {p['l2']:g} (validation accuracy {p['val_accuracy']:.3f})")
        else:
            row["loss"] = p["train_loss"][-1]
            row["note"] = (f"features {p['feature_s']:.1f} s, head {p['head_s']:.1f} s; "
                           f"loss {p['train_loss'][0]:.3f} -> {p['train_loss'][-1]:.3f}")
        return row
    careful = name == "careful"
    setting = (f"{p['dtype']}, batch {args.careful_batch}, group_by_length" if careful else "fp32, batch 8")
    row["side"] = f"{common.peer_label(p['mode'], careful)}, {setting}"
    loss = f"{p['steps']} steps, loss {p['losses'][0]:.3f} -> {p['losses'][-1]:.3f}"
    if task == "cls":
        row["note"] = f"{loss}; eval {p['eval_s']:.1f} s; lr {args.careful_lr if careful else args.peer_lr:g}"
    else:
        row["loss"] = p["losses"][-1]
        row["note"] = f"{loss}; " + (f"1 epoch {p['epoch_s']:.1f} s x{e} + setup {p['setup_s']:.1f} s" if not careful
                                     else f"{e} epochs {p['epoch_s'] * e:.1f} s + setup {p['setup_s']:.1f} s")
    return row


def ceiling_table(c: dict) -> str:
    """One row per side's first pass and per round (the pass, and the ceiling sliced between its batches), then
    each side's median share."""
    rows = []
    for name, side in c["sides"].items():
        what = "builds oneDNN's kernels per batch shape" + (", compiles" if name == "compiled" else "")
        rows.append({"measure": f"{name} feature pass, first ({what})", "pass s": side["first_s"],
                     "tok/s": c["tokens"] / side["first_s"]})
    for name, side in c["sides"].items():
        for i, r in enumerate(side["rounds"], 1):
            m = r["ceiling"]
            shapes = ", ".join(f"{k} {v:.2f}" for k, v in m["projections"].items())
            rows.append({"measure": f"round {i}: {name} feature pass, a ceiling slice before each batch",
                         "ceiling TFLOP/s": m["mix_tflops"], "pass s": r["wall_s"], "tok/s": r["tok_s"],
                         "pass TFLOP/s": r["tflops"], "% of ceiling": 100 * r["share"],
                         "note": f"per projection: {shapes}"})
    head = (f"ceiling: F.linear, {c['matmul_tokens']:,} tokens x the 7 projections of a block; pass: "
            f"features.backbone_features, max_tokens {c['max_tokens']:,}, {c['dtype']}, {c['sentences']:,} SST-2 "
            f"sentences, {c['tokens']:,} tokens; FLOPs = 2 x non-embedding params x tokens + causal attention "
            f"({100 * c['attention_share']:.1f}%); load {c['load']:.1f}")
    lines = [f"{name} feature pass at {100 * side['share']:.0f}% of the matmul ceiling (median of "
             f"{len(side['rounds'])} rounds)" for name, side in c["sides"].items()]
    return "\n".join([head, common.table(rows, ["measure", "ceiling TFLOP/s", "pass s", "tok/s", "pass TFLOP/s",
                                                "% of ceiling", "note"])] + lines)


if __name__ == "__main__":
    sys.exit(main())
