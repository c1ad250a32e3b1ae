"""One-shot device benchmark at Llama-3.2-1B's exact shape (random weights: same cost as the real ones).

    python bench/gpu.py                         # on the GPU: ~2 minutes on an H200 (bench/RESULTS.md)
    python bench/gpu.py --tiny --device cpu     # a tiny random Llama on the CPU (its own test)
    python bench/gpu.py --write-lengths         # regenerate bench/sst2_lengths.json from ../shared/data

Measures, in one process:
  0. the device's bf16 matmul ceiling (N^3 products, TFLOP/s);
  1. train_cls's pipeline on SST-2-sized synthetic data (67,349 train + 872 test sentences with SST-2's
     token-length distribution, bench/sst2_lengths.json): pooled features once (train_cls.features: the
     length-sorted features.backbone_passes, model.pool, the on-disk cache, cold) and the head for 3 epochs
     (loop.fit, train_cls's defaults) -- wall time, backbone tok/s, MFU, peak memory;
  2. the peer: transformers Trainer + LlamaForSequenceClassification, fp32, batch 8, dynamic padding,
     backbone frozen, timed over --peer-steps steps and extrapolated per example to 3 epochs + its eval;
  3. train_qa's backbone pass over 384-token windows (SQuAD-like lengths) vs the peer's Trainer +
     LlamaForQuestionAnswering, fp32, batch 8, padded to 384 -- per pass, and estimated for 3 epochs
     of SQuAD v2 train;
  4. the stronger peers on both tasks (bench/common.py, bench/peers.py): the careful Trainer (backbone in bf16,
     head in fp32 under bf16 autocast, group_by_length, batch --careful-batch, dynamic padding), timed like the
     peer; and features once (the bare LlamaModel in bf16, inference mode, length-sorted batches of 64 with an
     attention mask), measured in full: SST-2 then an L-BFGS logistic regression on the device, SQuAD per pass.
FLOPs = 2 x non-embedding parameters x non-pad tokens (attention scores excluded: ~2% at 384 tokens).
Without `accelerate` the peer runs the same steps in a hand-written loop, labelled as such.
"""
import argparse
import collections
import gc
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench import common, peers  # noqa: E402

LLAMA_CONFIG = ROOT / "bench" / "llama-3.2-1b" / "config.json"
LENGTHS = ROOT / "bench" / "sst2_lengths.json"
LLAMA_PAD = 128004  # <|finetune_right_pad_id|>, what model.load_tokenizer picks for Llama 3
SQUAD_V2_TRAIN_QUESTIONS = 130_319
QA_MAX_LENGTH = 384


def say(*a) -> None:
    print(*a, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a tiny random Llama and small data (CPU test)")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-tokens", type=int, help="tokens per backbone batch (default: train_cls's)")
    p.add_argument("--peer-steps", type=int, help="peer steps timed per task (default 200; --tiny 12)")
    p.add_argument("--skip-peer", action="store_true")
    p.add_argument("--peer-loop", action="store_true", help="use the hand-written loop even if Trainer works")
    p.add_argument("--peer-lr", type=float, default=1e-3)
    p.add_argument("--careful-batch", type=int, help="the careful Trainer's batch size (default 128; --tiny 16)")
    p.add_argument("--n-train", type=int, help="SST-2 train sentences (default 67,349; --tiny 256)")
    p.add_argument("--n-test", type=int, help="SST-2 test sentences (default 872; --tiny 64)")
    p.add_argument("--n-qa-windows", type=int, help="384-token windows in our QA pass (default 4096; --tiny 32)")
    p.add_argument("--matmul-size", type=int, help="N of the N^3 bf16 ceiling (default 8192; --tiny 256)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also profile train_cls's feature pass over N sentences: the top operators by device time")
    p.add_argument("--compile-check", action="store_true",
                   help="instead: train_qa's pass eager vs torch.compile(dynamic=True), compile time counted")
    p.add_argument("--sweep-max-tokens", default="8192,65536",
                   help="other --max-tokens to time train_qa's pass at, on a quarter of the windows ('' skips)")
    p.add_argument("--lora-windows", type=int, help="384-token windows per LoRA training timing (default 1024; "
                   "--tiny 16; 0 skips)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--write-lengths", action="store_true", help="regenerate bench/sst2_lengths.json and exit")
    p.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"),
                   help="with --write-lengths: folder with sst2/ and squad_v2/")
    args = p.parse_args(argv)
    defaults = dict(careful_batch=(16, 128), peer_steps=(12, 200), n_train=(256, 67_349), n_test=(64, 872),
                    n_qa_windows=(32, 4096), matmul_size=(256, 8192), lora_windows=(16, 1024))
    for key, (tiny, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else full)
    return args


# ---------------------------------------------------------------- lengths (shipped as bench/sst2_lengths.json)

def write_lengths(shared: Path, out: Path = LENGTHS) -> dict:
    """Token-length histograms of the real SST-2 train/dev and SQuAD v2 dev windows (384/128), under the
    embedded SmolLM2 tokenizer, +1 for the BOS a Llama 3 tokenizer adds (SmolLM2 adds none)."""
    import model
    import smollm2
    from data.labelled import read_labelled
    from data.squad import make_windows
    from data.squad_json import load_squad
    tok = model.load_tokenizer(str(smollm2.local_folder()))

    def hist(lengths):
        return {str(k): v for k, v in sorted(collections.Counter(lengths).items())}

    result = {"about": "token lengths, SmolLM2-135M tokenizer + 1 (Llama 3's BOS); generated by "
                       "`python bench/gpu.py --write-lengths` from GLUE SST-2 and SQuAD v2 dev",
              "tokenizer": "SmolLM2-135M-Instruct (+1 BOS)"}
    for split, name in (("train", "sst2_train"), ("dev", "sst2_dev")):
        texts = read_labelled(shared / "sst2" / f"{split}.tsv").texts
        result[name] = hist(len(s) + 1 for s in tok(texts, add_special_tokens=True)["input_ids"])
    examples = load_squad(shared / "squad_v2" / "dev-v2.0.json")
    windows = make_windows(examples, tok, QA_MAX_LENGTH - 1, 128, 64)  # one token kept for the BOS
    result["squad_windows"] = hist(len(w.input_ids) + 1 for w in windows)
    result["squad_windows_per_question"] = round(len(windows) / len(examples), 4)
    result["squad_mean_prefix"] = round(sum(w.context_start + 1 for w in windows) / len(windows), 2)
    out.write_text(json.dumps(result, indent=0) + "\n")
    say(f"wrote {out}: {sum(result['sst2_train'].values())} train, {sum(result['sst2_dev'].values())} dev "
        f"sentences, {len(windows)} SQuAD dev windows")
    return result


def sample_lengths(hist: dict[str, int], n: int, rng: random.Random) -> list[int]:
    """n lengths with the histogram's distribution: all of it (shuffled) when n is its size, else a sample."""
    pool = [int(k) for k, v in hist.items() for _ in range(v)]
    if n == len(pool):
        rng.shuffle(pool)
        return pool
    return rng.choices(pool, k=n)


def synth(lengths: list[int], vocab: int, pad: int, rng: random.Random) -> list[list[int]]:
    """Random token ids (never the pad id)."""
    ids = np.random.default_rng(rng.randrange(2**32)).integers(0, vocab - 1, size=sum(lengths))
    ids += ids >= pad
    cuts = np.cumsum(lengths)[:-1]
    return [part.tolist() for part in np.split(ids, cuts)]


# ---------------------------------------------------------------- measurements

def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """(fn(), seconds), the device synchronised at both ends."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def reset_peak(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def matmul_ceiling(n: int, device, iters: int = 10) -> float:
    """bf16 N^3 products on random data: TFLOP/s, the mean of `iters` after 3 warm-ups."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n ** 3 * iters / (time.perf_counter() - t0) / 1e12


def llama_config(tiny: bool):
    from transformers import LlamaConfig
    if tiny:
        return LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                           bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    config = LlamaConfig(**json.loads(LLAMA_CONFIG.read_text()))
    config.pad_token_id = LLAMA_PAD
    return config


def build(cls, config, device, dtype):
    """A randomly initialised model, created directly in `dtype` on `device`."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            m = cls(config)
    finally:
        torch.set_default_dtype(default)
    return m.to(device=device, dtype=dtype)


def non_embedding_params(lm) -> int:
    return sum(p.numel() for p in lm.model.parameters()) - lm.model.embed_tokens.weight.numel()


def ours_cls(lm, pad, train_seqs, y_train_all, test_seqs, y_test, args, device, work: Path) -> dict:
    """train_cls's pipeline: cold-cache pooled features (train + test), head for args.epochs, test accuracy."""
    import flags
    import loop
    import model
    import train_cls
    from rundir import RunDir
    from data.split import stratified_split
    from lrgrid import per_head_loss
    targs = train_cls.parse_args(["--epochs", str(args.epochs), "--seed", str(args.seed),
                                  "--runs-dir", str(work / "runs"), "--max-tokens", str(args.max_tokens)])
    os.environ["LLAMA_HEADS_CACHE"] = str(work / "cache")  # a fresh cache: features start cold
    tok = SimpleNamespace(pad_token_id=pad)
    reset_peak(device)
    t0 = time.perf_counter()
    x_all = train_cls.features(lm, tok, train_seqs, targs, "train").to(device)
    x_test = train_cls.features(lm, tok, test_seqs, targs, "test").to(device)
    sync(device)
    feature_s = time.perf_counter() - t0
    peak = peak_gib(device)
    train_idx, val_idx = stratified_split(y_train_all.tolist(), targs.val_fraction, targs.seed)
    y_all = y_train_all.to(device)
    x_train, y_train, x_val, y_val = x_all[train_idx], y_all[train_idx], x_all[val_idx], y_all[val_idx]
    torch.manual_seed(targs.seed)
    cfg = flags.train_args(targs, "accuracy")
    head = flags.trained_head(cfg, model.cls_head(lm.config.hidden_size, 2).to(device))  # --lr auto: the grid

    def epoch_batches(epoch):
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(targs.seed + epoch))
        return order.to(device).split(targs.batch_size)

    def evaluate():
        with torch.no_grad():
            logits = head(x_val).float()
        return {"val_loss": F.cross_entropy(logits, y_val).item(),
                "accuracy": (logits.argmax(-1) == y_val).float().mean().item()}

    run_dir = work / "runs" / "bench-cls"
    run_dir.mkdir(parents=True, exist_ok=True)
    head = loop.fit(head, lm.model, epoch_batches,
                    lambda b: per_head_loss(F.cross_entropy, head(x_train[b]).float(), y_train[b]), evaluate,
                    cfg, RunDir(run_dir), device, amp=False).head
    with torch.no_grad():
        acc = (head(x_test).argmax(-1) == y_test.to(device)).float().mean().item()
    sync(device)
    wall = time.perf_counter() - t0
    tokens = sum(map(len, train_seqs)) + sum(map(len, test_seqs))
    return {"wall_s": wall, "feature_s": feature_s, "head_s": wall - feature_s, "tokens": tokens,
            "peak_gib": peak, "accuracy": acc, "batch_size": targs.batch_size, "max_tokens": targs.max_tokens}


def ours_qa_pass(lm, pad, seqs, starts, args, device) -> dict:
    """train_qa's backbone pass (its cached-feature compute: length-sorted features.backbone_passes, the
    context + null rows of each window to host memory), without the disk write."""
    import features
    reset_peak(device)
    t0 = time.perf_counter()
    rows = 0
    for _, feats in features.backbone_features(lm.model, seqs, pad, args.max_tokens, "squad windows",
                                               lambda b, hidden, _: [hidden[r, starts[i]:len(seqs[i])]
                                                                     for r, i in enumerate(b)]):
        rows += sum(len(f) for f in feats)
    sync(device)
    return {"wall_s": time.perf_counter() - t0, "tokens": sum(map(len, seqs)), "rows": rows,
            "peak_gib": peak_gib(device)}


def lora_training(lm, pad, seqs, args, device, checkpoint: bool) -> dict:
    """train_qa --lora-rank 8 (q,k,v,o) on 384-token windows, batch train_qa's 32: what a training step costs
    (forward, backward through the frozen bf16 backbone, AdamW on adapters + head), tok/s and peak memory.
    The adapters are removed again afterwards, so the later phases see the plain backbone."""
    import flags
    import lora
    import train_cls
    from batching import length_batches, pad_batch
    targs = train_cls.parse_args(["--lora-rank", "8", "--max-tokens", str(args.max_tokens)]
                                 + (["--grad-checkpoint"] if checkpoint else []))
    flags.mode(targs).prepare(lm.model)
    try:
        lm.train()
        head = torch.nn.Linear(lm.config.hidden_size, 2).to(device)
        params = [p for p in lm.parameters() if p.requires_grad] + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=1e-4)
        batches = length_batches([len(s) for s in seqs], max_tokens=10**9, max_batch=32)
        reset_peak(device)

        def step(batch):
            ids, _ = pad_batch([seqs[i] for i in batch], pad, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                hidden = lm.model(input_ids=ids).last_hidden_state
                loss = head(hidden.float()).float().logsumexp(1).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        step(batches[0])  # warm-up (allocator, kernels)
        sync(device)
        t0 = time.perf_counter()
        for batch in batches[1:]:
            step(batch)
        sync(device)
        seconds = time.perf_counter() - t0
        tokens = sum(len(seqs[i]) for b in batches[1:] for i in b)
        out = {"wall_s": seconds, "tokens": tokens, "tok_s": tokens / seconds, "peak_gib": peak_gib(device),
               "windows": len(seqs) - len(batches[0]), "checkpoint": checkpoint,
               "trainable": sum(p.numel() for p in params)}
    finally:  # unwrap the adapters: the later phases see the plain backbone
        for name, m in list(lm.model.named_modules()):
            if isinstance(m, lora.LoRALinear):
                parent, _, child = name.rpartition(".")
                setattr(lm.model.get_submodule(parent), child, m.base)
        if checkpoint:
            lm.model.gradient_checkpointing_disable()
        lm.requires_grad_(False).eval()
    return out


def profile_features(lm, pad, seqs, args, device) -> None:
    """torch.profiler over train_cls's feature pass: where the time goes, by operator (device and host)."""
    import features
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in features.backbone_features(lm.model, seqs, pad, args.max_tokens, "profile",
                                            lambda b, hidden, mask: list(hidden[:, -1].float().unbind(0))):
            pass
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    say(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60))


def compile_check(lm, pad, vocab, lengths, rng, args, device, mfu) -> int:
    """Does torch.compile pay? train_qa's pass over 384-token windows and train_cls's over SST-2 sentences, eager,
    then compiled (dynamic=True: one compile serves both; its first pass includes the compile)."""
    qa_len = sample_lengths(lengths["squad_windows"], args.n_qa_windows, rng)
    sst2 = synth(sample_lengths(lengths["sst2_train"], args.n_train, rng), vocab, pad, rng)
    prefix = round(lengths["squad_mean_prefix"])
    work = {"squad": (synth(qa_len, vocab, pad, rng), [min(prefix, n - 1) for n in qa_len]),
            "sst2": (sst2, [len(s) - 1 for s in sst2])}  # sst2: the last token's row, as pooling reads it
    compiled = SimpleNamespace(model=torch.compile(lm.model, dynamic=True))
    rows = []
    for task, side, m in (("squad", "eager", lm), ("squad", "compiled, 1st pass", compiled),
                          ("squad", "compiled, 2nd pass", compiled), ("sst2", "eager", lm),
                          ("sst2", "compiled", compiled)):
        seqs, starts = work[task]
        r = ours_qa_pass(m, pad, seqs, starts, args, device)
        tflops, util = mfu(r["tokens"], r["wall_s"])
        say(f"    {task} {side}: {r['wall_s']:.1f} s, MFU {util:.1f}%")
        rows.append({"phase": f"{task} pass, {len(seqs):,} items", "side": side, "wall s": r["wall_s"],
                     "tok/s": r["tokens"] / r["wall_s"], "TFLOP/s": tflops, "MFU %": util, "peak GiB": r["peak_gib"]})
    say(common.table(rows, ["phase", "side", "wall s", "tok/s", "TFLOP/s", "MFU %", "peak GiB"]))
    return 0


def peer_model(kind: str, config, device, dtype):
    from transformers import LlamaForQuestionAnswering, LlamaForSequenceClassification
    if kind == "cls":
        config.num_labels = 2
    cls, head = ((LlamaForSequenceClassification, "score") if kind == "cls" else
                 (LlamaForQuestionAnswering, "qa_outputs"))
    return common.frozen_backbone(build(cls, config, device, dtype), head, dtype)


def run_peer(kind, config, items, args, device, eval_items=None, careful: bool = False) -> dict:
    """The assignment's Trainer (fp32, batch 8) or the careful one (bf16 backbone, batch --careful-batch,
    group_by_length), timed over --peer-steps steps."""
    reset_peak(device)
    m = peer_model(kind, config, device, torch.bfloat16 if careful else torch.float32)
    how = {"batch": args.careful_batch, "bf16": True, "group_by_length": True} if careful else {}
    warm = min(10, max(1, args.peer_steps // 4))
    out = common.run_peer(m, items, common.dynamic_pad(config.pad_token_id), device=device,
                          max_steps=args.peer_steps, lr=args.peer_lr, seed=args.seed, warm_steps=warm,
                          eval_items=eval_items, force_loop=args.peer_loop, log=say, **how)
    out["peak_gib"] = peak_gib(device)
    out["s_per_example"] = out["timed_s"] / (out["timed_steps"] * how.get("batch", common.PEER_BATCH))
    del m
    reset_peak(device)
    return out


def main(argv=None) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))  # the feature cache and run files; removed at the end
    try:
        return bench(parse_args(argv), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(args: argparse.Namespace, work: Path) -> int:
    if args.write_lengths:
        write_lengths(Path(args.shared))
        return 0
    import model
    device = model.pick_device(args.device)
    if args.max_tokens is None:
        import train_cls
        args.max_tokens = train_cls.parse_args([]).max_tokens
    lengths = json.loads(LENGTHS.read_text())
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    say(f"device {gpu}; torch {torch.__version__}; "
        f"{'tiny random Llama' if args.tiny else 'Llama-3.2-1B shape, random weights'}")
    rows, results = [], {"device": gpu, "tiny": args.tiny, "args": vars(args)}
    t_start = time.perf_counter()

    say(f"[0] bf16 matmul ceiling, {args.matmul_size}^3")
    ceiling = matmul_ceiling(args.matmul_size, device)
    results["ceiling_tflops"] = ceiling
    rows.append({"phase": "matmul ceiling", "side": f"bf16 {args.matmul_size}^3", "TFLOP/s": ceiling})
    say(f"    {ceiling:,.1f} TFLOP/s")

    config = llama_config(args.tiny)
    pad, vocab = config.pad_token_id, config.vocab_size
    t0 = time.perf_counter()
    from transformers import LlamaForCausalLM, LlamaModel
    lm = build(LlamaForCausalLM, config, device, torch.bfloat16)
    lm.requires_grad_(False).eval()
    if device.type == "cuda":
        model.skip_cudnn_attention()  # as model.load_backbone does; the peers below get torch's default back
    flops_per_token = 2 * non_embedding_params(lm)
    say(f"    backbone built in {time.perf_counter() - t0:.1f} s: {non_embedding_params(lm):,} non-embedding "
        f"parameters, bf16")

    def mfu(tokens, seconds):
        tflops = flops_per_token * tokens / seconds / 1e12
        return tflops, 100 * tflops / ceiling

    if args.compile_check:
        return compile_check(lm, pad, vocab, lengths, rng, args, device, mfu)

    # ---- 1. SST-2-sized classification
    train_len = sample_lengths(lengths["sst2_train"], args.n_train, rng)
    test_len = sample_lengths(lengths["sst2_dev"], args.n_test, rng)
    train_seqs, test_seqs = synth(train_len, vocab, pad, rng), synth(test_len, vocab, pad, rng)
    y_train = torch.randint(0, 2, (len(train_seqs),), generator=torch.Generator().manual_seed(args.seed))
    y_test = torch.randint(0, 2, (len(test_seqs),), generator=torch.Generator().manual_seed(args.seed + 1))
    say(f"[1] sst2, ours: train_cls pipeline, {len(train_seqs):,} + {len(test_seqs):,} sentences "
        f"({sum(train_len) + sum(test_len):,} tokens), {args.epochs} epochs, max_tokens {args.max_tokens}")
    ours = ours_cls(lm, pad, train_seqs, y_train, test_seqs, y_test, args, device, work)
    tflops, util = mfu(ours["tokens"], ours["feature_s"])
    ours.update(tok_s=ours["tokens"] / ours["feature_s"], tflops=tflops, mfu=util)
    results["sst2_ours"] = ours
    say(f"    wall {ours['wall_s']:.1f} s (features {ours['feature_s']:.1f} s at {ours['tok_s']:,.0f} tok/s, "
        f"MFU {util:.1f}%; head {ours['head_s']:.1f} s)")
    rows.append({"phase": "sst2 3 epochs", "side": "ours", "wall s": ours["wall_s"],
                 "examples/s": len(train_seqs) * args.epochs / ours["wall_s"], "tok/s": ours["tok_s"],
                 "TFLOP/s": tflops, "MFU %": util, "peak GiB": ours["peak_gib"],
                 "note": f"measured; features {ours['feature_s']:.1f} s + head {ours['head_s']:.1f} s"})

    if args.profile:
        say(f"[1b] profile: feature pass over {args.profile:,} sentences")
        profile_features(lm, pad, train_seqs[:args.profile], args, device)

    # ---- QA windows, ours (while the bf16 backbone is loaded; the peers build their own fp32 models)
    hist = lengths["squad_windows"]
    qa_len = sample_lengths(hist, args.n_qa_windows, rng)
    prefix = round(lengths["squad_mean_prefix"])
    qa_seqs = synth(qa_len, vocab, pad, rng)
    qa_starts = [min(prefix, n - 1) for n in qa_len]
    say(f"[2] squad, ours: train_qa backbone pass over {len(qa_seqs):,} windows ({sum(qa_len):,} tokens)")
    qa = ours_qa_pass(lm, pad, qa_seqs, qa_starts, args, device)
    tflops, util = mfu(qa["tokens"], qa["wall_s"])
    qa.update(tok_s=qa["tokens"] / qa["wall_s"], tflops=tflops, mfu=util, s_per_example=qa["wall_s"] / len(qa_seqs))
    results["squad_ours"] = qa
    say(f"    {qa['wall_s']:.1f} s, {qa['tok_s']:,.0f} tok/s, MFU {util:.1f}%")
    rows.append({"phase": "squad 1 pass", "side": "ours", "wall s": qa["wall_s"],
                 "examples/s": 1 / qa["s_per_example"], "tok/s": qa["tok_s"], "TFLOP/s": tflops, "MFU %": util,
                 "peak GiB": qa["peak_gib"], "note": f"measured, {len(qa_seqs):,} windows"})

    for max_tokens in [int(t) for t in args.sweep_max_tokens.split(",") if t]:
        part = len(qa_seqs) // 4
        swept = ours_qa_pass(lm, pad, qa_seqs[:part], qa_starts[:part],
                             argparse.Namespace(**{**vars(args), "max_tokens": max_tokens}), device)
        tflops, util = mfu(swept["tokens"], swept["wall_s"])
        results.setdefault("squad_sweep", {})[max_tokens] = {**swept, "mfu": util}
        say(f"    max_tokens {max_tokens}: {swept['tokens'] / swept['wall_s']:,.0f} tok/s, MFU {util:.1f}%")
        rows.append({"phase": "squad pass, sweep", "side": f"ours, max_tokens {max_tokens}",
                     "tok/s": swept["tokens"] / swept["wall_s"], "TFLOP/s": tflops, "MFU %": util,
                     "peak GiB": swept["peak_gib"], "note": f"{part:,} windows (default {args.max_tokens})"})

    for checkpoint in (False, True) if args.lora_windows else ():
        say(f"[2b] LoRA r=8 q,k,v,o training steps, batch 32, {args.lora_windows} windows, "
            f"grad checkpointing {'on' if checkpoint else 'off'}")
        try:
            lt = lora_training(lm, pad, qa_seqs[:args.lora_windows], args, device, checkpoint)
        except torch.OutOfMemoryError as e:  # a size that does not fit is a result, not a reason to lose the rest
            say(f"    out of memory: {str(e).splitlines()[0]}")
            rows.append({"phase": "lora r=8 train", "side": "ours", "note": "out of memory"})
            reset_peak(device)
            continue
        results[f"lora_{'ckpt' if checkpoint else 'plain'}"] = lt
        say(f"    {lt['tok_s']:,.0f} tok/s, peak {lt['peak_gib'] or 0:.1f} GiB")
        rows.append({"phase": "lora r=8 train", "side": f"ours{', grad ckpt' if checkpoint else ''}",
                     "wall s": lt["wall_s"], "examples/s": lt["windows"] / lt["wall_s"], "tok/s": lt["tok_s"],
                     "peak GiB": lt["peak_gib"], "note": f"{lt['trainable']:,} trainable; forward+backward+AdamW"})

    hidden = lm.config.hidden_size
    del lm
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(True)
    reset_peak(device)

    if not args.skip_peer:
        # The Trainer peers run every epoch's backbone; features once runs it once, like ours.
        n_full = round(SQUAD_V2_TRAIN_QUESTIONS * lengths["squad_windows_per_question"])
        gb = n_full * (qa["rows"] / len(qa_seqs)) * hidden * 2 / 1e9
        passes = 1 if gb <= 50 else args.epochs  # ours caches features when they fit --cache-budget-gb (50)
        ours_full = qa["s_per_example"] * n_full * passes
        results["squad_full_estimate"] = {"windows": n_full, "features_gb": gb, "ours_passes": passes,
                                          "ours_s": ours_full}
        full_rows = [{"phase": "squad-v2 train 3 ep", "side": "ours", "wall s": ours_full,
                      "note": f"est. {n_full:,} windows; features {gb:.0f} GB -> "
                              f"{'cached, 1 pass' if passes == 1 else f'over 50 GB, {passes} passes'}"}]
        trainer = "Trainer" if common.have_accelerate() and not args.peer_loop else "loop"
        for careful in (False, True):
            key, setting = ("careful", f"bf16 backbone, batch {args.careful_batch}, group_by_length") if careful \
                else ("peer", "fp32, batch 8")
            say(f"[3] sst2, {key}: LlamaForSequenceClassification {setting}, dynamic padding, frozen backbone, "
                f"{args.peer_steps} steps ({trainer})")
            items = [{"input_ids": s, "labels": int(y)} for s, y in zip(train_seqs, y_train)]
            eval_items = [{"input_ids": s, "labels": int(y)} for s, y in zip(test_seqs, y_test)]
            peer = run_peer("cls", llama_config(args.tiny), items, args, device, eval_items, careful)
            for per_item in ("logits", "labels"):  # one per test item: no result to keep
                peer.pop(per_item, None)
            peer["wall_s"] = peer["s_per_example"] * len(items) * args.epochs + peer["eval_s"]
            results[f"sst2_{key}"] = peer
            label = f"{common.peer_label(peer['mode'], careful)}, {setting}"
            say(f"    {peer['s_per_example'] * 1e3:.2f} ms/example -> {peer['wall_s']:.1f} s for {args.epochs} "
                f"epochs + eval ({peer['eval_s']:.1f} s)")
            rows.append({"phase": "sst2 3 epochs", "side": label, "wall s": peer["wall_s"],
                         "examples/s": 1 / peer["s_per_example"], "peak GiB": peer["peak_gib"],
                         "ratio": peer["wall_s"] / ours["wall_s"],
                         "note": f"extrapolated from {peer['timed_steps']} steps; eval measured"})

            padding = "padded per batch" if careful else f"padded to {QA_MAX_LENGTH}"
            say(f"[4] squad, {key}: LlamaForQuestionAnswering {setting}, {padding}, frozen backbone, "
                f"{args.peer_steps} steps")
            qa_items = [{**({"input_ids": s} if careful else common.pad_to(s, QA_MAX_LENGTH, pad)),
                         "start_positions": st, "end_positions": st} for s, st in zip(qa_seqs, qa_starts)]
            qpeer = run_peer("qa", llama_config(args.tiny), qa_items, args, device, careful=careful)
            results[f"squad_{key}"] = qpeer
            say(f"    {qpeer['s_per_example'] * 1e3:.2f} ms/example")
            rows.append({"phase": "squad 1 pass", "side": label, "wall s": qpeer["s_per_example"] * len(qa_seqs),
                         "examples/s": 1 / qpeer["s_per_example"], "peak GiB": qpeer["peak_gib"],
                         "ratio": qpeer["s_per_example"] / qa["s_per_example"],
                         "note": f"extrapolated from {qpeer['timed_steps']} steps"})
            peer_full = qpeer["s_per_example"] * n_full * args.epochs
            results["squad_full_estimate"][f"{key}_s"] = peer_full
            full_rows.append({"phase": "squad-v2 train 3 ep", "side": label, "wall s": peer_full,
                              "ratio": peer_full / ours_full,
                              "note": f"est. {n_full:,} windows x {args.epochs} epochs"})

        say("[5] features once: LlamaModel (AutoModel's class) in bf16, inference mode, batches of 64 sorted by "
            "length, attention mask; sst2 + L-BFGS logistic regression, squad one pass")
        import train_cls
        reset_peak(device)
        backbone = build(LlamaModel, llama_config(args.tiny), device, torch.bfloat16).eval()
        label = "features once, AutoModel (bf16)"
        val_fraction = train_cls.parse_args([]).val_fraction
        sst2, sst2_s = timed(lambda: peers.features_once_cls(backbone, pad, train_seqs, y_train.tolist(), test_seqs,
                                                             y_test.tolist(), val_fraction, args.seed), device)
        sst2.update(wall_s=sst2_s, peak_gib=peak_gib(device))
        results["sst2_features"] = sst2
        say(f"    sst2: {sst2_s:.1f} s (features {sst2['feature_s']:.1f} s), L2 {sst2['l2']:g}")
        rows.append({"phase": "sst2 3 epochs", "side": label + " + L-BFGS logistic regression", "wall s": sst2_s,
                     "tok/s": ours["tokens"] / sst2["feature_s"], "peak GiB": sst2["peak_gib"],
                     "ratio": sst2_s / ours["wall_s"],
                     "note": f"measured; features {sst2['feature_s']:.1f} s + fit {sst2['fit_s']:.1f} s"})
        reset_peak(device)
        _, qf_s = timed(lambda: peers.span_rows(backbone, qa_seqs, qa_starts, pad), device)
        results["squad_features"] = {"wall_s": qf_s, "peak_gib": peak_gib(device)}
        say(f"    squad pass: {qf_s:.1f} s")
        rows.append({"phase": "squad 1 pass", "side": label, "wall s": qf_s, "examples/s": len(qa_seqs) / qf_s,
                     "tok/s": qa["tokens"] / qf_s, "peak GiB": peak_gib(device), "ratio": qf_s / qa["wall_s"],
                     "note": f"measured, {len(qa_seqs):,} windows"})
        features_full = qf_s / len(qa_seqs) * n_full * passes
        full_rows.append({"phase": "squad-v2 train 3 ep", "side": label, "wall s": features_full,
                          "ratio": features_full / ours_full,
                          "note": f"est. {n_full:,} windows, as many passes as ours"})
        del backbone
        rows += full_rows

    phases = list(dict.fromkeys(r["phase"] for r in rows))
    rows.sort(key=lambda r: phases.index(r["phase"]))  # each phase's sides together, in the order they ran
    results["rows"], results["total_s"] = rows, time.perf_counter() - t_start
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str) + "\n")
    say(f"\n## bench/gpu.py on {gpu} ({'tiny' if args.tiny else 'Llama-3.2-1B shape'}; "
        f"torch {torch.__version__}; run took {results['total_s']:.0f} s)")
    say("FLOPs = 2 x non-embedding params x non-pad tokens; MFU against the measured bf16 ceiling; ratio = the "
        "side's wall s / ours (x faster); ours, the careful peer and features once in bf16, the peer in fp32 "
        f"(TF32 matmuls {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'})")
    say(common.table(rows, ["phase", "side", "wall s", "examples/s", "tok/s", "TFLOP/s", "MFU %", "peak GiB",
                            "ratio", "note"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
