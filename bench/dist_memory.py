"""Host memory per torchrun rank while the ranks exchange their feature shares (features.cached_features):
what a node needs to train on cached features under torchrun.

    python bench/dist_memory.py                       # 2 CPU ranks (gloo), QA-like ragged bf16 features
    python bench/dist_memory.py --items 250 500 1000 --length 160 --hidden 2048

Each rank computes its share of every chunk (random stand-ins for the backbone's states: the exchange is what is
measured, not the model) and receives the other ranks' shares through the process group (all_gather_object,
which a GPU group sends through its gloo backend too). Peak RSS above the rank's baseline is printed against the
bytes of the whole feature set, for several sizes, so the slope shows.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rank_main(items: int, length: int, hidden: int, chunk: int) -> None:
    import torch

    import distributed
    import features
    distributed.setup(torch.device("cpu"))
    base = rss_mb()

    def compute(idx):
        for lo in range(0, len(idx), 64):
            batch = idx[lo:lo + 64]
            yield batch, [torch.randn(length, hidden, dtype=torch.bfloat16) for _ in batch]
    feats = features.cached_features(None, [[0] * length] * items, compute, chunk=chunk)
    total = sum(f.numel() * f.element_size() for f in feats) / 2**20
    line = json.dumps({"rank": distributed.rank(), "base_mb": base, "peak_mb": rss_mb(), "features_mb": total})
    os.write(1, (line + "\n").encode())  # one write: the ranks share the pipe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, nargs="+", default=[250, 500, 1000], help="windows (one ragged item each)")
    p.add_argument("--length", type=int, default=160, help="context tokens a window keeps (SQuAD: ~160)")
    p.add_argument("--hidden", type=int, default=2048, help="hidden size (Llama-3.2-1B: 2048)")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--chunk", type=int, default=250, help="windows per exchange (the scripts: 4096); the slope "
                   "over several chunks is what holding the features costs, the offset what one exchange adds")
    p.add_argument("--rank-of", nargs=4, type=int, help=argparse.SUPPRESS)  # a rank's own run
    args = p.parse_args()
    if args.rank_of:
        return rank_main(*args.rank_of)
    print("| windows | features (MB) | rank | baseline RSS (MB) | peak RSS (MB) | peak above baseline / features |\n"
          "|---|---|---|---|---|---|")
    rows = []
    for n in args.items:
        out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc_per_node={args.ranks}", __file__, "--rank-of", str(n), str(args.length),
                              str(args.hidden), str(args.chunk)], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        if out.returncode:
            sys.exit(f"torchrun failed: {out.stderr[-2000:]}")
        for r in sorted((json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")),
                        key=lambda r: r["rank"]):
            above = r["peak_mb"] - r["base_mb"]
            rows.append((r["features_mb"], above))
            print(f"| {n} | {r['features_mb']:.0f} | {r['rank']} | {r['base_mb']:.0f} | {r['peak_mb']:.0f} | "
                  f"{above / r['features_mb']:.2f} |")
    (x0, y0), (x1, y1) = min(rows), max(rows)
    slope = (y1 - y0) / (x1 - x0)
    chunk_mb = x0 * args.chunk / args.items[0]
    print(f"\n{args.ranks} ranks: peak RSS per rank = baseline + {slope:.2f} x the features (every rank holds them "
          f"all) + {(y0 - slope * x0) / chunk_mb:.2f} x one chunk's features ({args.chunk} windows: the exchange)")


if __name__ == "__main__":
    main()
