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


def table_blocks(out: str) -> list[dict[tuple[str, str], dict[str, str]]]:
    """Each Markdown table printed, in order, as {(first cell, second cell): {column: cell}}."""
    blocks, current = [], []
    for ln in out.splitlines() + [""]:
        if ln.startswith("|"):
            current.append(ln)
        elif current:
            blocks.append(current)
            current = []
    tables = []
    for lines in blocks:
        header = [c.strip() for c in lines[0].strip("|").split("|")]
        rows = {}
        for ln in lines[2:]:
            cells = dict(zip(header, (c.strip() for c in ln.strip("|").split("|"))))
            rows[(cells[header[0]], cells[header[1]])] = cells
        tables.append(rows)
    return tables


def table_rows(out: str) -> dict[tuple[str, str], dict[str, str]]:
    """The last table printed."""
    return table_blocks(out)[-1]


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
    assert number(rows[("squad 1 pass", "ours")]["tok/s"]) > 0
    careful = f"careful {PEER}, bf16 backbone, batch 16, group_by_length"
    features = "features once, AutoModel (bf16)"
    for phase, sides in (("sst2 3 epochs", [PEER + ", fp32, batch 8", careful,
                                            features + " + L-BFGS logistic regression"]),
                         ("squad 1 pass", [PEER + ", fp32, batch 8", careful, features]),
                         ("squad-v2 train 3 ep", [PEER + ", fp32, batch 8", careful, features])):
        for side in sides:
            assert number(rows[(phase, side)]["wall s"]) > 0 and number(rows[(phase, side)]["ratio"]) > 0
    result = json.loads((tmp_path / "g.json").read_text())
    assert result["sst2_ours"]["tokens"] > 64 and result["sst2_peer"]["mode"] == ("trainer" if TRAINER else "loop")
    assert result["sst2_peer"]["steps"] == result["sst2_careful"]["steps"] == 6
    assert 0 <= result["sst2_features"]["accuracy"] <= 1


def test_gpu_bench_peer_fallback_loop(tmp_path):
    """Without accelerate the peers run a hand-written loop, and the table says so."""
    out = run(["bench/gpu.py", "--tiny", "--device", "cpu", "--n-train", "16", "--n-test", "8", "--n-qa-windows", "2",
               "--peer-steps", "3", "--matmul-size", "64", "--peer-loop"], tmp_path, 120)
    rows = table_rows(out)
    loop = "peer (Trainer-equivalent loop)"
    for phase in ("sst2 3 epochs", "squad 1 pass"):
        assert number(rows[(phase, loop + ", fp32, batch 8")]["wall s"]) > 0
        assert number(rows[(phase, f"careful {loop}, bf16 backbone, batch 16, group_by_length")]["wall s"]) > 0


def test_sst2_lengths_shipped():
    lengths = json.loads((ROOT / "bench" / "sst2_lengths.json").read_text())
    assert sum(lengths["sst2_train"].values()) == 67_349 and sum(lengths["sst2_dev"].values()) == 872
    assert max(map(int, lengths["squad_windows"])) <= 384 and lengths["squad_windows_per_question"] >= 1


def test_cpu_bench_smoke(tmp_path, tiny_llama_folder):
    """bench/cpu.py's subprocesses (ours, the three peers, the ceiling) on a tiny random Llama (the real SmolLM2
    is the default)."""
    out = run(["bench/cpu.py", "--model", str(tiny_llama_folder), "--n-train", "16", "--n-test", "8", "--n-qa", "4",
               "--careful-batch", "4", "--rounds", "2", "--compiled", "--json", str(tmp_path / "c.json")], tmp_path,
              600)
    tables = table_blocks(out)
    rows = tables[0]
    cold = next(v for (task, side), v in rows.items() if task == "sst2" and side.startswith("ours, cold cache"))
    assert number(cold["wall s"]) > 0 and 0 <= number(cold["accuracy"]) <= 1
    for task in ("sst2", "squad"):
        sides = {side: v for (t, side), v in rows.items() if t == task}
        peer = sides[PEER + ", fp32, batch 8"]
        careful = next(v for side, v in sides.items() if side.startswith("careful " + PEER))
        features = next(v for side, v in sides.items() if side.startswith("features once, AutoModel"))
        for side in (peer, careful, features):
            assert number(side["wall s"]) > 0 and number(side["x faster"]) > 0
            if task == "sst2":
                assert 0 <= number(side["accuracy"]) <= 1
            else:
                assert number(side["loss"]) > 0
        assert re.search(r"loss [\d.]+ -> [\d.]+", peer["note"])
        assert f"{task}: ours " in out and "/ best peer" in out
    assert "group_by_length" in careful["side"]
    ceiling = tables[1]
    result, slices = json.loads((tmp_path / "c.json").read_text()), set()
    for side in ("eager", "compiled"):  # --compiled: the compiled pass is measured as the eager one is
        first = next(v for (m, _), v in ceiling.items() if m.startswith(f"{side} feature pass, first"))
        rounds = [v for (m, _), v in ceiling.items() if m.startswith("round ") and f" {side} " in m]
        assert number(first["tok/s"]) > 0 and len(rounds) == 2  # --rounds 2: each pass against its own ceiling
        for r in rounds:
            share = number(r["pass TFLOP/s"]) / number(r["ceiling TFLOP/s"]) * 100
            assert number(r["tok/s"]) > 0 and abs(number(r["% of ceiling"]) - share) <= 0.02 * share + 0.1
        assert re.search(rf"{side} feature pass at \d+% of the matmul ceiling \(median of 2 rounds\)", out)
        slices.update(r["ceiling"]["slices"] for r in result["ceiling"]["sides"][side]["rounds"])
    assert len(slices) == 1 and min(slices) >= 1  # a slice before each batch: the same count in every pass
    assert result["ours_cls_warm"]["timing"]["features_s"] < result["ours_cls"]["timing"]["features_s"]
    assert result["careful_cls"]["steps"] == 3 * 16 // 4  # every train row, batches of 4, 3 epochs


def test_peer_labels_follow_the_logits_order():
    """Trainer groups evaluation batches by length too, so a peer's logits come in another order than its items:
    run_peer returns the labels in the logits' order (a model that reads each label off its input scores 1.0)."""
    import numpy as np
    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput
    sys.path.insert(0, str(ROOT))
    from bench import common

    class LengthParity(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, input_ids, attention_mask, labels=None):
            odd = attention_mask.sum(1) % 2
            logits = torch.stack([1 - odd, odd], 1).float() * self.scale
            loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
            return SequenceClassifierOutput(loss=loss, logits=logits)

    items = [{"input_ids": [1] * n, "labels": n % 2} for n in (5, 2, 9, 4, 7, 3, 8, 1, 6, 10, 2, 11)]
    for force_loop in (False, True):
        out = common.run_peer(LengthParity(), items, common.dynamic_pad(0), device=torch.device("cpu"), epochs=1,
                              batch=4, group_by_length=True, eval_items=items, force_loop=force_loop,
                              log=lambda *a: None)
        assert (np.asarray(out["logits"]).argmax(-1) == np.asarray(out["labels"])).all()
