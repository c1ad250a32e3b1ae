"""bench/device_check.sh --smoke: the GPU check's whole sequence on the CPU at tiny size; its time boxes and failure
rows; bench/transfer.py's parts (split, checked, joined, unpacked)."""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bench import device_check, transfer
from test_bench import table_rows

ROOT = Path(__file__).resolve().parents[1]


def check(tmp_path: Path, *flags: str, timeout: int = 600) -> tuple[subprocess.CompletedProcess, dict]:
    """bench/device_check.sh as a user runs it: its output, and the table's rows by (stage, check)."""
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run(["bash", "bench/device_check.sh", *flags, "--out", str(tmp_path / "out")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc, table_rows(proc.stdout)


def test_smoke_runs_every_check(tmp_path):
    proc, rows = check(tmp_path, "--smoke")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {stage for stage, _ in rows} == set(device_check.STAGES)
    results = {key: row["result"] for key, row in rows.items()}
    assert "FAIL" not in results.values() and "skipped" not in results.values(), results
    for key in [("cls", "train_cls.py end to end"), ("cls", "cls: Ctrl-C in epoch 2, --resume = one run"),
                ("cls", "predict.py on the --export"),
                ("qa", "qa (LoRA dropout): Ctrl-C in epoch 2, --resume = one run"),
                ("qa", "predict.py on the --export --merge"),
                ("torchrun", "train_cls.py under torchrun, 2 rank(s), gloo")]:
        assert results[key] == "pass", key
    assert rows[("cls", "cls: Ctrl-C in epoch 2, --resume = one run")]["value"] == \
        "weights and test/validation numbers identical"
    assert rows[("qa", "CUDA generator restored by --resume")]["value"] == "CPU run: ckpt.pt holds ['rng']"
    # the GPU's goals are shown, not judged, at tiny sizes on a CPU
    for key in [("speed", "SQuAD pass MFU"), ("speed", "sst2: ours vs the best peer"),
                ("learn", "adapted HasAns_f1"), ("learn", "adapted F1 against always-no-answer")]:
        assert results[key] == "n/a" and rows[key]["value"][0].isdigit(), key
    for side in ("frozen head", "zero-shot", "adapted: LoRA r=4, every projection"):
        assert "HasAns_f1" in rows[("learn", f"SQuAD v2, held-out articles: {side}")]["value"]
    assert "no-answer AUC" in rows[("learn", "SQuAD v2, held-out articles: frozen head")]["value"]
    out = tmp_path / "out"
    saved = json.loads((out / "device_check.json").read_text())
    assert saved["smoke"] and len(saved["rows"]) == len(rows)
    assert json.loads((out / "gpu.json").read_text())["tiny"]
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert any(n.endswith("torchrun.log") or "torch" in n for n in tar.getnames())


def test_a_stage_out_of_time_or_failing_is_a_row_and_the_next_runs(tmp_path):
    proc, rows = check(tmp_path, "--smoke", "--stages", "speed,learn", "--box", "speed=1", "--squad-dev",
                       str(tmp_path / "missing.json"))
    assert proc.returncode == 1
    assert rows[("speed", "stage")]["result"] == "FAIL"
    assert "out of the stage's time (1 s)" in rows[("speed", "stage")]["value"]
    assert rows[("learn", "stage")]["result"] == "FAIL"
    assert "no SQuAD 2.0 dev file" in rows[("learn", "stage")]["value"]


def test_flags_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    for flags in (["--stages", "cls,gpu"], ["--box", "cls"], ["--box", "nope=3"], ["--work", str(tmp_path)]):
        proc = subprocess.run([sys.executable, "bench/device_check.py", *flags], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_auc():
    has_answer = {"a": True, "b": True, "c": False, "d": False}
    assert device_check.auc({"a": 0.1, "b": 0.2, "c": 0.8, "d": 0.9}, has_answer) == 1.0
    assert device_check.auc({"a": 0.9, "b": 0.8, "c": 0.2, "d": 0.1}, has_answer) == 0.0
    assert device_check.auc({"a": 0.5, "b": 0.2, "c": 0.5, "d": 0.9}, has_answer) == 0.875  # a tie counts half
    assert device_check.auc({"a": 0.5, "b": 0.2}, {"a": True, "b": True}) is None


def test_weight_diff_sees_any_difference(tmp_path):
    runs = {}
    for name, bump in (("a", 0.0), ("b", 0.0), ("c", 1e-7)):
        runs[name] = tmp_path / name
        runs[name].mkdir()
        save_file({"weight": torch.ones(2, 3) + bump}, str(runs[name] / "head.safetensors"))
    assert device_check.weight_diff(str(runs["a"]), str(runs["b"])) == {"equal": True, "max_abs": 0.0}
    diff = device_check.weight_diff(str(runs["a"]), str(runs["c"]))
    assert not diff["equal"] and 0 < diff["max_abs"] < 1e-6
    save_file({"lora_A": torch.zeros(1)}, str(runs["a"] / "adapter_model.safetensors"))
    assert device_check.weight_diff(str(runs["a"]), str(runs["b"]))["note"] == \
        "adapter_model.safetensors in one run only"


# ---------------------------------------------------------------- bench/transfer.py

def parts_of(tmp_path: Path, size: int = 2500, part: int = 1024) -> tuple[Path, Path, bytes]:
    data = os.urandom(size)
    (tmp_path / "bundle").write_bytes(data)
    carry = tmp_path / "carry"
    transfer.split(tmp_path / "bundle", carry, part)
    return tmp_path / "bundle", carry, data


def test_split_and_join(tmp_path):
    _, carry, data = parts_of(tmp_path)
    assert sorted(p.name for p in carry.iterdir()) == ["1", "2", "3"]
    assert [(carry / str(i) / transfer.SLICE).stat().st_size for i in (1, 2, 3)] == [1024, 1024, 452]
    manifest = transfer.join(carry, tmp_path / "joined")
    assert (tmp_path / "joined").read_bytes() == data and manifest["bundle_bytes"] == 2500
    assert transfer.check(carry)[1] == []


def test_a_damaged_or_missing_part_is_named(tmp_path):
    _, carry, _ = parts_of(tmp_path)
    damaged = bytearray((carry / "2" / transfer.SLICE).read_bytes())
    damaged[100] ^= 1
    (carry / "2" / transfer.SLICE).write_bytes(bytes(damaged))
    (carry / "3" / transfer.SLICE).unlink()
    with pytest.raises(transfer.TransferError) as e:
        transfer.join(carry, tmp_path / "joined")
    assert "part 2 of 3 is damaged" in str(e.value) and "part 3 of 3 has not arrived" in str(e.value)
    assert "part 1" not in str(e.value)
    with pytest.raises(transfer.TransferError, match="no part has arrived"):
        transfer.join(tmp_path / "nothing", tmp_path / "joined")


def test_parts_of_two_packs_do_not_join(tmp_path):
    _, carry, _ = parts_of(tmp_path)
    (tmp_path / "other").mkdir()
    _, other, _ = parts_of(tmp_path / "other")
    manifest = json.loads((carry / "1" / transfer.MANIFEST).read_text())
    (carry / "2" / transfer.SLICE).write_bytes((other / "2" / transfer.SLICE).read_bytes())
    manifest["parts"][1] = json.loads((other / "2" / transfer.MANIFEST).read_text())["parts"][1]
    for i in (1, 2, 3):  # a manifest that vouches for each part, yet the whole is not the bundle packed
        (carry / str(i) / transfer.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(transfer.TransferError, match="do not give the packed bundle"):
        transfer.join(carry, tmp_path / "joined")


def test_unpack_checks_every_file_once(tmp_path):
    stage = tmp_path / "stage"
    (stage / "site" / "pkg").mkdir(parents=True)
    (stage / "squad_v2").mkdir()
    (stage / "site" / "pkg" / "__init__.py").write_text("VALUE = 7\n")
    (stage / "squad_v2" / "dev-v2.0.json").write_text('{"data": []}')
    files = {str(p.relative_to(stage)): transfer.sha256(p) for p in stage.rglob("*") if p.is_file()}
    with tarfile.open(tmp_path / "bundle.tar.gz", "w:gz") as tar:
        for name in files:
            tar.add(stage / name, arcname=name)
    transfer.split(tmp_path / "bundle.tar.gz", tmp_path / "carry", 200, files)
    dest = tmp_path / "dest"
    env = transfer.unpack(tmp_path / "carry", dest)
    assert env["SQUAD_DEV"] == str(dest / "squad_v2" / "dev-v2.0.json") and env["NLTK_DATA"] == str(dest / "nltk_data")
    out = subprocess.run([sys.executable, "-c", "import pkg; print(pkg.VALUE)"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": env["PYTHONPATH"]}, cwd=tmp_path)
    assert out.stdout == "7\n"
    for part in (tmp_path / "carry").glob(f"*/{transfer.SLICE}"):
        part.unlink()  # a second call (the next device call on a warm machine) finds the bundle unpacked
    assert transfer.unpack(tmp_path / "carry", dest) == env
    cli = subprocess.run([sys.executable, "bench/transfer.py", "check", "--carry", str(tmp_path / "carry")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and cli.stdout.startswith(f"0 of {len(list((tmp_path / 'carry').iterdir()))} parts")
    cli = subprocess.run([sys.executable, "bench/transfer.py", "unpack", "--carry", str(tmp_path / "none")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and "no part has arrived" in cli.stderr
