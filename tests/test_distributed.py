"""torchrun: 2 CPU processes (gloo) on the tiny model give the metrics of 1 process, and only rank 0 writes.

Each step's batch is split between the ranks and their gradients are summed, so both runs take the same
optimizer steps; they differ only in float summation order. Tolerance: losses within 1e-5, identical
accuracy / F1 (a flip would need a logit within ~1e-6 of a decision boundary)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import data_dir_cut

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "samples"


MACHINES = "tests/rank_machine.py"  # each rank as if on a machine of its own
NCCL = "tests/nccl_ranks.py"  # each rank in the process group a GPU rank joins, NCCL's device constraint simulated


def launch(nproc: int, script: str, flags: list[str], cache: Path, wrapper: str | None = None
           ) -> subprocess.CompletedProcess:
    """nproc ranks on this machine sharing its disk, or run through a wrapper (MACHINES, NCCL)."""
    cmd = [sys.executable, script] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] + \
        ([wrapper] if wrapper else []) + [script]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LLAMA_HEADS_CACHE": str(cache), "TQDM_DISABLE": "1",
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd + flags, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def run_both(tmp_path: Path, script: str, flags: list[str]) -> tuple[dict, dict, subprocess.CompletedProcess]:
    """metrics.json of a 1-process and a 2-process run of the same command, and the latter's output."""
    result = {}
    for n in (1, 2):
        runs = tmp_path / f"runs{n}"
        out = launch(n, script, flags + ["--runs-dir", str(runs), "--run-name", "r"], tmp_path / f"cache{n}")
        assert [p.name for p in runs.iterdir()] == ["r"]
        result[n] = json.loads((runs / "r" / "metrics.json").read_text())
        features = list((tmp_path / f"cache{n}" / "features").iterdir())
        assert features and all(f.suffix == ".safetensors" for f in features)  # merged, shares removed
    return result[1], result[2], out


def assert_same_rows(one: list[dict], two: list[dict], exact: list[str]) -> None:
    assert len(one) == len(two)
    for a, b in zip(one, two):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
        assert [a[k] for k in exact] == [b[k] for k in exact]


def test_train_cls_two_ranks_match_one(tmp_path, tiny_llama_folder):
    data = data_dir_cut(tmp_path / "sst2", "sst2", 240, 80)
    one, two, out = run_both(tmp_path, "train_cls.py", ["--model", str(tiny_llama_folder), "--data-dir", str(data),
                                                        "--dtype", "fp32", "--epochs", "2", "--batch-size", "15"])
    assert_same_rows(one["epochs"], two["epochs"], ["accuracy"])
    for stage in ("before", "after"):
        assert one["metrics"][stage]["accuracy"] == two["metrics"][stage]["accuracy"]
        assert one["metrics"][stage]["loss"] == pytest.approx(two["metrics"][stage]["loss"], abs=1e-5)
    assert out.stdout.count("test set (80 sentences)") == 1  # rank 1 prints nothing


def test_train_qa_two_ranks_match_one(tmp_path, tiny_llama_folder):
    one, two, _ = run_both(tmp_path, "train_qa.py", [
        "--model", str(tiny_llama_folder), "--train-file", str(SAMPLE / "squad_train.json"),
        "--eval-file", str(SAMPLE / "squad_test.json"), "--max-train-examples", "60", "--max-eval-examples", "30",
        "--epochs", "2", "--dtype", "fp32"])
    assert_same_rows(one["epochs"], two["epochs"], ["f1"])
    assert one["threshold"] == pytest.approx(two["threshold"], abs=1e-4)
    for stage in ("before", "after"):
        assert one["metrics"][stage]["f1"] == pytest.approx(two["metrics"][stage]["f1"], abs=1e-9)


def metrics_of(runs: Path, name: str) -> dict:
    return json.loads((runs / name / "metrics.json").read_text())


def feature_files(cache: Path) -> list[str]:
    return sorted(f.name for f in (cache / "features").iterdir())


@pytest.mark.parametrize("script, extra", [("train_cls.py", []), ("train_qa.py", []),
                                           ("train_cls.py", ["--unfreeze-last", "1", "--backbone-lr", "1e-3"])],
                         ids=["cls", "qa", "cls-unfreeze-last"])
def test_two_machines_without_a_shared_disk(tmp_path, tiny_llama_folder, script, extra):
    """Two ranks, each with its own cache folder (as two machines have): the feature shares travel through the
    process group, both machines end with the whole cache, and the run equals one process's. Warm caches on
    both, and a cache on one machine only, give the same run again."""
    data = ["--data-dir", str(SAMPLE / "sst2")] if script == "train_cls.py" else [
        "--train-file", str(SAMPLE / "squad_train.json"), "--eval-file", str(SAMPLE / "squad_test.json"),
        "--max-train-examples", "40", "--max-eval-examples", "20"]
    flags = ["--model", str(tiny_llama_folder), *data, "--dtype", "fp32", "--epochs", "2", *extra]
    if script == "train_cls.py":
        flags[3] = str(data_dir_cut(tmp_path / "sst2", "sst2", 120, 40))
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    launch(1, script, flags + ["--runs-dir", str(runs), "--run-name", "one"], tmp_path / "cache1")
    one = metrics_of(runs, "one")

    def two_machines(name):
        launch(2, script, flags + ["--runs-dir", str(runs), "--run-name", name], cache, wrapper=MACHINES)
        got = metrics_of(runs, name)["metrics"]
        for stage, numbers in one["metrics"].items():
            for k, v in numbers.items():
                assert got[stage][k] == (v if v is None else pytest.approx(v, abs=1e-5)), (stage, k)
        assert [p.name for p in (cache / "rank1").iterdir()] == ["features"]  # rank 1 wrote no run files
    two_machines("cold")
    assert feature_files(cache / "rank0") == feature_files(cache / "rank1") == feature_files(tmp_path / "cache1")
    if script == "train_cls.py" and not extra:
        two_machines("warm")
        for f in (cache / "rank1" / "features").iterdir():
            f.unlink()
        two_machines("one-machine-warm")
        assert feature_files(cache / "rank1") == feature_files(cache / "rank0")


@pytest.mark.parametrize("script, extra", [("train_cls.py", []), ("train_qa.py", []),
                                           ("train_cls.py", ["--unfreeze-last", "1", "--backbone-lr", "1e-3"])],
                         ids=["cls", "qa", "cls-unfreeze-last"])
def test_ranks_in_a_gpu_process_group(tmp_path, tiny_llama_folder, script, extra):
    """The process group a GPU run joins, with NCCL's refusal of CPU tensors simulated (tests/nccl_ranks.py): the
    feature pass, its cache (cold, then warm), the gradient sums and --resume (the checkpoint sent from rank 0)
    all run, and the resumed 2-rank run equals one process's. On a group of NCCL alone, the first collective of
    a CPU tensor fails."""
    data = ["--data-dir", str(data_dir_cut(tmp_path / "sst2", "sst2", 120, 40))] if script == "train_cls.py" else [
        "--train-file", str(SAMPLE / "squad_train.json"), "--eval-file", str(SAMPLE / "squad_test.json"),
        "--max-train-examples", "40", "--max-eval-examples", "20"]
    flags = ["--model", str(tiny_llama_folder), *data, "--dtype", "fp32", *extra]
    runs = tmp_path / "runs"
    for nproc, name, wrapper in ((1, "one", None), (2, "two", NCCL)):  # 1 epoch, then resumed for a second
        named = flags + ["--runs-dir", str(runs), "--run-name", name]
        launch(nproc, script, named + ["--epochs", "1"], tmp_path / name, wrapper=wrapper)
        assert "resumed from" in launch(nproc, script, named + ["--epochs", "2", "--resume"], tmp_path / name,
                                        wrapper=wrapper).stdout
    one, got = metrics_of(runs, "one"), metrics_of(runs, "two")
    assert_same_rows(one["epochs"], got["epochs"], ["f1"] if script == "train_qa.py" else ["accuracy"])
    for stage, numbers in one["metrics"].items():
        for k, v in numbers.items():
            assert got["metrics"][stage][k] == (v if v is None else pytest.approx(v, abs=1e-5)), (stage, k)
