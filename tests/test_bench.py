"""The benchmarks run end to end at tiny sizes and print sane tables (timings themselves are not checked)."""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
# The peer runs transformers' Trainer when `accelerate` is installed (requirements-bench.txt), else the
# hand-written equivalent loop; both are accepted here, and the row's label must say which ran.
TRAINER = importlib.util.find_spec("accelerate") is not None
PEER = "peer (Trainer)" if TRAINER else "peer (Trainer-equivalent loop)"


def run(args: list[str], tmp_path: Path, timeout: int) -> str:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def table_rows(out: str) -> dict[tuple[str, str], dict[str, str]]:
    """{(first cell, second cell): {column: cell}} of the last Markdown table printed."""
    lines = [ln for ln in out.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for ln in lines[2:]:
        cells = dict(zip(header, (c.strip() for c in ln.strip("|").split("|"))))
        rows[(cells[header[0]], cells[header[1]])] = cells
    return rows


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_gpu_bench_tiny_on_cpu(tmp_path):
    out = run(["bench/gpu.py", "--tiny", "--device", "cpu", "--n-train", "64", "--n-test", "16",
               "--n-qa-windows", "8", "--peer-steps", "6", "--json", str(tmp_path / "g.json")], tmp_path, 120)
    rows = table_rows(out)
    ceiling = rows[("matmul ceiling", "bf16 256^3")]
    assert number(ceiling["TFLOP/s"]) > 0
    ours = rows[("sst2 3 epochs", "ours")]
    assert number(ours["wall s"]) > 0 and number(ours["tok/s"]) > 0 and 0 < number(ours["MFU %"])
    peer = rows[("sst2 3 epochs", PEER)]
    assert number(peer["wall s"]) > 0 and number(peer["examples/s"]) > 0
    assert number(rows[("sst2 3 epochs", "ratio peer/ours")]["ratio"]) > 0
    assert number(rows[("squad 1 pass", "ours")]["tok/s"]) > 0
    assert number(rows[("squad 1 pass", PEER)]["wall s"]) > 0
    assert number(rows[("squad 1 pass", "ratio peer/ours")]["ratio"]) > 0
    assert number(rows[("squad-v2 train 3 ep", "ratio peer/ours")]["ratio"]) > 0
    result = json.loads((tmp_path / "g.json").read_text())
    assert result["sst2_ours"]["tokens"] > 64 and result["sst2_peer"]["mode"] == ("trainer" if TRAINER else "loop")
    assert result["sst2_peer"]["steps"] == 6


def test_gpu_bench_peer_fallback_loop(tmp_path):
    """Without accelerate the peer runs a hand-written loop, and the table says so."""
    out = run(["bench/gpu.py", "--tiny", "--device", "cpu", "--n-train", "16", "--n-test", "8", "--n-qa-windows", "2",
               "--peer-steps", "3", "--matmul-size", "64", "--peer-loop"], tmp_path, 120)
    rows = table_rows(out)
    assert number(rows[("sst2 3 epochs", "peer (Trainer-equivalent loop)")]["wall s"]) > 0
    assert number(rows[("squad 1 pass", "peer (Trainer-equivalent loop)")]["wall s"]) > 0


def test_sst2_lengths_shipped():
    lengths = json.loads((ROOT / "bench" / "sst2_lengths.json").read_text())
    assert sum(lengths["sst2_train"].values()) == 67_349 and sum(lengths["sst2_dev"].values()) == 872
    assert max(map(int, lengths["squad_windows"])) <= 384 and lengths["squad_windows_per_question"] >= 1


def test_cpu_bench_smoke(tmp_path, tiny_llama_folder):
    """bench/cpu.py's five subprocesses on a tiny random Llama (the real SmolLM2 is the default)."""
    out = run(["bench/cpu.py", "--model", str(tiny_llama_folder), "--n-train", "16", "--n-test", "8", "--n-qa", "4",
               "--json", str(tmp_path / "c.json")], tmp_path, 240)
    rows = table_rows(out)
    cold = next(v for (task, side), v in rows.items() if task == "sst2" and side.startswith("ours, cold cache"))
    assert number(cold["wall s"]) > 0 and 0 <= number(cold["accuracy"]) <= 1
    peer = rows[("sst2", PEER + " fp32")]
    assert number(peer["wall s"]) > 0 and 0 <= number(peer["accuracy"]) <= 1
    assert re.search(r"loss [\d.]+ -> [\d.]+", peer["note"])
    assert number(rows[("sst2", "ratio peer/ours (cold)")]["ratio"]) > 0
    assert number(rows[("squad", "ratio peer/ours")]["ratio"]) > 0
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["ours_cls_warm"]["timing"]["features_s"] < result["ours_cls"]["timing"]["features_s"]
