"""Ours vs the peer on this machine's CPU, with the embedded SmolLM2-135M on real data cuts.

    python bench/cpu.py                                   # SST-2 400 train / 200 test, SQuAD 64 questions
    python bench/cpu.py --n-train 16 --n-test 16 --n-qa 8 # a smoke run (tests/test_bench.py)

SST-2 (data/samples/sst2, a seeded sample of --n-train train rows and --n-test dev rows):
  ours  train_cls.main(...) for 3 epochs, end to end (load, tokenize, features, head, test eval, run files),
        with a fresh LLAMA_HEADS_CACHE so the feature cache starts cold; then again, warm.
  peer  transformers Trainer + LlamaForSequenceClassification, fp32, batch 8, DataCollatorWithPadding,
        backbone frozen, 3 epochs on the same train rows, then Trainer.predict on the same test rows.
SQuAD (data/samples/squad_train.json, a seeded sample of --n-qa questions, windows of 384 tokens, stride 128):
  ours  train_qa's pipeline on those windows: backbone features once (train_qa.WindowFeatures, cold cache),
        then the span head for 3 epochs (loop.fit) -- no evaluation;
  peer  Trainer + LlamaForQuestionAnswering, fp32, batch 8, every window padded to 384, backbone frozen:
        1 epoch timed, x3 for 3 epochs.
Each side runs in its own subprocess (same thread count), one after another. Model conversion is
excluded (done first); model loading is included on both sides.
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

from bench import common  # noqa: E402

SST2 = ROOT / "data" / "samples" / "sst2"
SQUAD = ROOT / "data" / "samples" / "squad_train.json"
QA_MAX_LENGTH, QA_STRIDE = 384, 128


def say(*a) -> None:
    print(*a, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m",
                   help="the embedded SmolLM2 (default) or a local Llama folder (tests use a tiny random one)")
    p.add_argument("--n-train", type=int, default=400, help="SST-2 train rows (of data/samples/sst2/train.tsv)")
    p.add_argument("--n-test", type=int, default=200, help="SST-2 test rows (of dev.tsv)")
    p.add_argument("--n-qa", type=int, default=64, help="SQuAD questions (of data/samples/squad_train.json)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch threads for every side (default: torch's default here)")
    p.add_argument("--peer-lr", type=float, default=1e-3,
                   help="the peer's learning rate (Trainer's default 5e-5 barely moves a new head in 3 epochs)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--skip-qa", action="store_true")
    p.add_argument("--skip-peer", action="store_true")
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


def worker_peer_cls(spec: dict) -> dict:
    torch = _setup(spec)
    from transformers import DataCollatorWithPadding, LlamaForSequenceClassification
    import model
    from data.labelled import encode_labels, label_names, read_labelled
    t0 = time.perf_counter()
    tok = model.load_tokenizer(spec["model"])
    train, test = read_labelled(spec["train"]), read_labelled(spec["test"])
    names = label_names(train)
    m = LlamaForSequenceClassification.from_pretrained(spec["model"], num_labels=len(names), dtype=torch.float32)
    m.config.pad_token_id = tok.pad_token_id
    common.freeze_backbone(m, "score")

    def items(data):
        enc = tok(data.texts, truncation=True, max_length=256)
        return [{"input_ids": ids, "attention_mask": mask, "labels": y}
                for ids, mask, y in zip(enc["input_ids"], enc["attention_mask"], encode_labels(data, names))]
    train_items, test_items = items(train), items(test)
    out = common.run_peer(m, train_items, DataCollatorWithPadding(tok), device=torch.device("cpu"),
                          epochs=spec["epochs"], lr=spec["peer_lr"], seed=spec["seed"], eval_items=test_items)
    wall = time.perf_counter() - t0
    y = torch.tensor([it["labels"] for it in test_items])
    acc = (torch.as_tensor(out.pop("logits")).argmax(-1) == y).float().mean().item()
    return {**out, "wall_s": wall, "accuracy": acc, "train_rows": len(train_items)}


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
                                "--doc-stride", str(QA_STRIDE)])
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
                    lambda: {}, flags.train_args(args), RunDir(run_dir), device, amp=False)
    end = time.perf_counter()
    return {"wall_s": end - t0, "feature_s": feature_s, "head_s": end - t1 - feature_s, "windows": len(windows),
            "questions": len(examples), "tokens": sum(len(w.input_ids) for w in windows), "cached": source.stored,
            "dtype": str(lm.dtype).removeprefix("torch."), "train_loss": [r["train_loss"] for r in rows]}


def worker_peer_qa(spec: dict) -> dict:
    torch = _setup(spec)
    from transformers import AutoModel, LlamaForQuestionAnswering, default_data_collator
    import model
    import train_qa
    from data.squad import make_windows
    from data.squad_json import load_squad
    t0 = time.perf_counter()
    tok = model.load_tokenizer(spec["model"])
    backbone = AutoModel.from_pretrained(spec["model"], dtype=torch.float32)
    config = backbone.config
    config.pad_token_id = tok.pad_token_id
    m = LlamaForQuestionAnswering(config)
    # Its backbone attribute is `transformer`: from_pretrained on a plain Llama folder would leave it random.
    m.base_model.load_state_dict(backbone.state_dict())
    m.float()
    del backbone
    common.freeze_backbone(m, "qa_outputs")
    examples = train_qa.subsample(load_squad(spec["squad"]), spec["n_qa"], spec["seed"])
    windows = make_windows(examples, tok, QA_MAX_LENGTH, QA_STRIDE, 64)
    items = [{**common.pad_to(w.input_ids, QA_MAX_LENGTH, tok.pad_token_id),
              "start_positions": w.start_position, "end_positions": w.end_position} for w in windows]
    setup_s = time.perf_counter() - t0
    out = common.run_peer(m, items, default_data_collator, device=torch.device("cpu"), epochs=1,
                          lr=spec["peer_lr"], seed=spec["seed"])
    return {**out, "setup_s": setup_s, "wall_s": setup_s + spec["epochs"] * out["train_s"], "windows": len(windows),
            "epoch_s": out["train_s"]}


WORKERS = {"ours-cls": worker_ours_cls, "peer-cls": worker_peer_cls, "ours-qa": worker_ours_qa,
           "peer-qa": worker_peer_qa}


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
    say(f"  {spec['tag']}: {out['wall_s']:.1f} s")
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
    base = {"model": folder, "train": str(work / "train.tsv"), "test": str(work / "test.tsv"), "squad": str(SQUAD),
            "n_qa": args.n_qa, "epochs": args.epochs, "seed": args.seed, "threads": threads, "peer_lr": args.peer_lr,
            "runs": str(work / "runs")}
    model_name = "SmolLM2-135M" if args.model == "smollm2-135m" else Path(folder).name
    say(f"bench/cpu.py: {model_name} on {threads} threads; SST-2 {n_train} train / {n_test} test rows, "
        f"SQuAD {args.n_qa} questions; {args.epochs} epochs; work folder {work}")
    res = {"threads": threads, "n_train": n_train, "n_test": n_test, "n_qa": args.n_qa, "epochs": args.epochs}
    t_all = time.perf_counter()
    res["ours_cls"] = launch("ours-cls", {**base, "tag": "ours-cls-cold", "run_name": "ours-cold"}, work,
                             work / "cache-cls")
    res["ours_cls_warm"] = launch("ours-cls", {**base, "tag": "ours-cls-warm", "run_name": "ours-warm"}, work,
                                  work / "cache-cls")
    if not args.skip_peer:
        res["peer_cls"] = launch("peer-cls", {**base, "tag": "peer-cls"}, work, work / "cache-peer")
    if not args.skip_qa:
        res["ours_qa"] = launch("ours-qa", {**base, "tag": "ours-qa"}, work, work / "cache-qa")
        if not args.skip_peer:
            res["peer_qa"] = launch("peer-qa", {**base, "tag": "peer-qa"}, work, work / "cache-peer")
    res["total_s"] = time.perf_counter() - t_all

    e = args.epochs
    o, w = res["ours_cls"], res["ours_cls_warm"]
    rows = [{"task": "sst2", "side": f"ours, cold cache ({o['dtype']})", "wall s": o["wall_s"],
             "examples/s": n_train * e / o["wall_s"], "accuracy": o["accuracy"],
             "note": f"features {o['timing']['features_s']:.1f} s, head {o['timing']['train_s']:.1f} s; "
                     f"head trained on {o['split']['train']} rows (+{o['split']['validation']} validation)"},
            {"task": "sst2", "side": "ours, warm cache", "wall s": w["wall_s"], "examples/s": n_train * e / w["wall_s"],
             "accuracy": w["accuracy"], "note": f"features {w['timing']['features_s']:.1f} s (read from the cache)"}]
    if "peer_cls" in res:
        p = res["peer_cls"]
        rows.append({"task": "sst2", "side": common.peer_label(p["mode"]) + " fp32", "wall s": p["wall_s"],
                     "examples/s": n_train * e / p["wall_s"], "accuracy": p["accuracy"],
                     "note": f"{p['steps']} steps, loss {p['losses'][0]:.3f} -> {p['losses'][-1]:.3f}; "
                             f"eval {p['eval_s']:.1f} s; lr {args.peer_lr:g}"})
        rows.append({"task": "sst2", "side": "ratio peer/ours (cold)", "ratio": p["wall_s"] / o["wall_s"]})
        rows.append({"task": "sst2", "side": "ratio peer/ours (warm)", "ratio": p["wall_s"] / w["wall_s"]})
    if "ours_qa" in res:
        q = res["ours_qa"]
        rows.append({"task": "squad", "side": f"ours, cold cache ({q['dtype']})", "wall s": q["wall_s"],
                     "examples/s": q["windows"] * e / q["wall_s"],
                     "note": f"{q['windows']} windows of {q['questions']} questions, {q['tokens']:,} tokens; "
                             f"features {q['feature_s']:.1f} s, head {q['head_s']:.1f} s; "
                             f"loss {q['train_loss'][0]:.3f} -> {q['train_loss'][-1]:.3f}"})
        if "peer_qa" in res:
            p = res["peer_qa"]
            rows.append({"task": "squad", "side": common.peer_label(p["mode"]) + " fp32", "wall s": p["wall_s"],
                         "examples/s": p["windows"] * e / p["wall_s"],
                         "note": f"1 epoch {p['epoch_s']:.1f} s x{e} + setup {p['setup_s']:.1f} s; "
                                 f"{p['steps']} steps, loss {p['losses'][0]:.3f} -> {p['losses'][-1]:.3f}"})
            rows.append({"task": "squad", "side": "ratio peer/ours", "ratio": p["wall_s"] / q["wall_s"]})
    res["rows"] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    say(f"\n## bench/cpu.py: {model_name}, {threads} CPU threads, {e} epochs "
        f"(examples/s = train rows (SST-2) or windows (SQuAD) x epochs / wall s)")
    say(common.table(rows, ["task", "side", "wall s", "examples/s", "accuracy", "ratio", "note"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
