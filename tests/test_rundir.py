"""rundir.py: a run is never silently replaced, --resume refuses a run made otherwise (naming what differs),
damaged files are one-line errors, and every JSON file is strict."""
import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import flags
from helpers import ROOT, assert_one_line_error, fill, run_script
from rundir import RunDir, RunError, strict_json

SQUAD = ROOT / "data" / "samples" / "squad_train.json"

CONFIG = {"model": "m", "lr": 0.005, "epochs": 3, "seed": 1, "data": "abc", "mode": "head", "export": None,
          "weights": "sha256:abc"}


def test_a_new_run_writes_its_config(tmp_path):
    run = RunDir.open(tmp_path / "r", CONFIG, resume=False, overwrite=False)
    assert run.read_json("config.json") == CONFIG


def test_an_existing_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    RunDir.open(tmp_path / "r", CONFIG, resume=False, overwrite=False)
    (tmp_path / "r" / "head.safetensors").write_bytes(b"the first run's head")
    with pytest.raises(RunError, match="holds a run already; pass --resume to continue it, --overwrite"):
        RunDir.open(tmp_path / "r", CONFIG, resume=False, overwrite=False)
    assert (tmp_path / "r" / "head.safetensors").read_bytes() == b"the first run's head"  # untouched
    RunDir.open(tmp_path / "r", {**CONFIG, "epochs": 5, "export": "out"}, resume=True, overwrite=False)  # may change


def test_overwrite_keeps_the_old_run_until_the_new_one_writes(tmp_path):
    RunDir.open(tmp_path / "r", CONFIG, resume=False, overwrite=False)
    (tmp_path / "r" / "head.safetensors").write_bytes(b"the first run's head")
    run = RunDir.open(tmp_path / "r", {**CONFIG, "lr": 1.0}, resume=False, overwrite=True)
    assert (tmp_path / "r" / "head.safetensors").read_bytes() == b"the first run's head"
    assert run.read_json("config.json") == CONFIG  # a new run that dies now leaves the old one whole
    run.save_epoch([{"epoch": 1, "train_loss": 0.5}], {"epoch": 1})
    assert sorted(f.name for f in run.path.iterdir()) == ["ckpt.pt", "config.json", "log.jsonl"]
    assert run.read_json("config.json") == {**CONFIG, "lr": 1.0}


def test_resume_with_no_run_starts_one(tmp_path, capsys):
    run = RunDir.open(tmp_path / "r", CONFIG, resume=True, overwrite=False)
    assert run.read_json("config.json") == CONFIG and "holds no run yet; starting it" in capsys.readouterr().out


@pytest.mark.parametrize("change, words", [
    ({"lr": 0.01}, "--lr was 0.005, now 0.01"),
    ({"weights": "sha256:other"}, "the model's weights changed"),
    ({"model": "other", "weights": "sha256:other"}, "--model was 'm', now 'other'"),
    ({"epochs": 2}, "--epochs may grow on --resume, not shrink"),
    ({"mode": "lora"}, "the training mode changed (--lora-rank / --unfreeze-last)"),
    ({"data": "xyz"}, "the data (texts or labels) changed"),
])
def test_resume_refuses_a_run_made_otherwise(tmp_path, change, words):
    RunDir.open(tmp_path / "r", CONFIG, resume=False, overwrite=False)
    (tmp_path / "r" / "ckpt.pt").write_bytes(b"an epoch's checkpoint")
    with pytest.raises(RunError, match="was made otherwise") as e:
        RunDir.open(tmp_path / "r", {**CONFIG, **change}, resume=True, overwrite=False)
    assert words in str(e.value)


def test_moved_model_and_data_resume(tmp_path):
    """The model's weights and the data's contents are compared by digest: another path to the same resumes."""
    RunDir.open(tmp_path / "r", {**CONFIG, "data_dir": "a"}, resume=False, overwrite=False)
    (tmp_path / "r" / "ckpt.pt").write_bytes(b"an epoch's checkpoint")
    RunDir.open(tmp_path / "r", {**CONFIG, "model": "/moved/m", "data_dir": "/elsewhere/a"}, resume=True,
                overwrite=False)


def test_weights_unknown_when_the_run_began_are_not_compared(tmp_path):
    """A Hub model not downloaded yet when the run began recorded its bare id; runs from before weights were
    recorded have none: either resumes on the weights it finds."""
    for old in ({**CONFIG, "weights": "m"}, {k: v for k, v in CONFIG.items() if k != "weights"}):
        RunDir.open(tmp_path / "r", old, resume=False, overwrite=True)
        (tmp_path / "r" / "ckpt.pt").write_bytes(b"an epoch's checkpoint")
        RunDir.open(tmp_path / "r", CONFIG, resume=True, overwrite=False)


def test_damaged_files_name_themselves(tmp_path):
    run = RunDir.open(tmp_path / "r", CONFIG, resume=False, overwrite=False)
    run.file("ckpt.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RunError, match="ckpt.pt does not load .*delete it"):
        run.load_checkpoint("cpu")
    run.file("head.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(RunError, match="head.safetensors does not load"):
        run.load_weights("head.safetensors")
    for text, why in (("{", "JSONDecodeError"), ("[]", "a JSON list, not an object")):
        run.file("metrics.json").write_text(text)
        with pytest.raises(RunError, match=f"metrics.json does not read as a run's JSON \\({why}\\)"):
            run.read_json("metrics.json")


def test_runs_dir_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="cannot make the run folder"):
        RunDir.open(tmp_path / "file" / "r", CONFIG, resume=False, overwrite=False)
    with pytest.raises(RunError, match="is a file, not a run folder"):
        RunDir.open(tmp_path / "file", CONFIG, resume=False, overwrite=False)


def test_json_is_strict():
    text = strict_json({"f1": math.nan, "loss": [math.inf, 1.0], "n": 3})
    assert json.loads(text) == {"f1": None, "loss": [None, 1.0], "n": 3} and "NaN" not in text


def test_cli_rerun_with_the_same_name(tmp_path, tiny_llama_folder):
    """From the shell, as a user would: the second run stops in one line, and --resume of a finished run with
    another learning rate names it."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (data / name).write_text("sentence\tlabel\n" + "".join(f"s{i} is ok\t{i % 2}\n" for i in range(20)))
    flags = ["--model", str(tiny_llama_folder), "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"),
             "--epochs", "1", "--run-name", "r"]
    env = {"LLAMA_HEADS_CACHE": str(tmp_path / "cache")}
    assert run_script("train_cls.py", *flags, env=env).returncode == 0
    head = (tmp_path / "runs" / "r" / "head.safetensors").read_bytes()
    assert_one_line_error(run_script("train_cls.py", *flags, env=env), "holds a run already", "--overwrite")
    assert_one_line_error(run_script("train_cls.py", *flags, "--resume", "--lr", "0.1", env=env),
                          "--lr was 'auto', now 0.1")
    assert (tmp_path / "runs" / "r" / "head.safetensors").read_bytes() == head
    # --overwrite with a model that does not load: one line, and the old run is still all there
    bad = [f if f != str(tiny_llama_folder) else str(tmp_path / "no-model") for f in flags]
    assert_one_line_error(run_script("train_cls.py", *bad, "--overwrite", env=env), "no such folder")
    assert (tmp_path / "runs" / "r" / "head.safetensors").read_bytes() == head
    assert RunDir(tmp_path / "runs" / "r").read_json("config.json")["model"] == str(tiny_llama_folder)


def test_a_folder_holding_only_its_config_is_no_run(tmp_path):
    """A run that stopped before saving anything (its model did not load, say) may be started again."""
    RunDir.open(tmp_path / "r", CONFIG, resume=False, overwrite=False)
    run = RunDir.open(tmp_path / "r", {**CONFIG, "model": "other"}, resume=False, overwrite=False)
    assert run.read_json("config.json")["model"] == "other"


def test_a_run_is_not_continued_or_loaded_on_other_weights(tmp_path, tiny_llama_folder):
    """The model a run trained on is recorded by its weights, not its path: a copy of the folder is the same model;
    the folder rewritten with other weights is refused by --resume and by predict.py, in one line."""
    import shutil

    import torch
    from transformers import LlamaForCausalLM
    model = tmp_path / "model"
    shutil.copytree(tiny_llama_folder, model)
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (data / name).write_text("sentence\tlabel\n" + "".join(f"s{i} is ok\t{i % 2}\n" for i in range(20)))
    flags = ["--model", str(model), "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"), "--run-name", "r"]
    env = {"LLAMA_HEADS_CACHE": str(tmp_path / "cache")}
    assert run_script("train_cls.py", *flags, "--epochs", "1", env=env).returncode == 0
    shutil.copytree(tiny_llama_folder, model, dirs_exist_ok=True)  # the same files again, with new mtimes
    assert run_script("predict.py", str(tmp_path / "runs" / "r"), "--text", "fine", env=env).returncode == 0
    torch.manual_seed(1)
    LlamaForCausalLM(LlamaForCausalLM.from_pretrained(model).config).save_pretrained(model)
    assert_one_line_error(run_script("train_cls.py", *flags, "--epochs", "2", "--resume", env=env),
                          "the model's weights changed")
    assert_one_line_error(run_script("predict.py", str(tmp_path / "runs" / "r"), "--text", "fine", env=env),
                          "was trained on other weights")


# --- two processes, a killed run, a full disk, a read-only folder, a checkpoint from elsewhere -------------------

CLAIM = """import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
import flags
from rundir import RunDir

def work():
    print("ready", flush=True)
    while not Path({go!r}).exists():
        time.sleep(0.01)
    RunDir.open({path!r}, {config!r}, resume=False, overwrite=False)
    print("claimed", flush=True)
    while not Path({done!r}).exists():
        time.sleep(0.05)
    return 0
flags.run(work)
"""


def claim(path, signals: Path) -> subprocess.Popen:
    """A process that opens the run `path` as a script does once `signals`/go exists, then works until
    `signals`/done does."""
    code = CLAIM.format(root=str(ROOT), path=str(path), config=CONFIG, go=str(signals / "go"),
                        done=str(signals / "done"))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_of_two_processes_opening_one_run_exactly_one_proceeds(tmp_path):
    first, second = claim(tmp_path / "r", tmp_path), claim(tmp_path / "r", tmp_path)
    assert first.stdout.readline() == second.stdout.readline() == "ready\n"
    (tmp_path / "go").touch()  # both open the run now
    winner, loser = (first, second) if first.stdout.readline() == "claimed\n" else (second, first)
    out, err = loser.communicate(timeout=300)
    assert loser.returncode == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: {tmp_path / 'r'} is in use by pid {winner.pid} on ")
    assert "wait for that run to end, or pass another --run-name" in err
    (tmp_path / "done").touch()
    assert winner.wait(300) == 0 and not (tmp_path / ".r.lock").exists()  # its clean exit removed the lock
    # one after the other: the second finds a run (not a lock) and says so
    (tmp_path / "r" / "log.jsonl").write_text("{}\n")
    late = claim(tmp_path / "r", tmp_path)
    assert late.wait(300) == 2 and "holds a run already" in late.communicate()[1]


def test_a_killed_runs_lock_is_taken_over_saying_so(tmp_path):
    (tmp_path / "go").touch()
    holder = claim(tmp_path / "r", tmp_path)
    assert holder.stdout.readline() == "ready\n" and holder.stdout.readline() == "claimed\n"
    holder.send_signal(signal.SIGKILL)  # no exit handler runs: the lock file stays, naming the dead process
    holder.wait(300)
    assert (tmp_path / ".r.lock").read_text().startswith(f"pid {holder.pid} on ")
    (tmp_path / "r" / "config.json").unlink()  # the killed run had saved nothing yet
    (tmp_path / "done").touch()
    taker = claim(tmp_path / "r", tmp_path)
    out, err = taker.communicate(timeout=300)
    assert taker.returncode == 0, err
    assert f"taking over the lock of pid {holder.pid} on " in out and "which ended without releasing it" in out
    assert not (tmp_path / ".r.lock").exists()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".filler"}


def cls_flags(tmp_path, model, runs, *more) -> list[str]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for name in ("train.tsv", "dev.tsv"):
        (data / name).write_text("sentence\tlabel\n" + "".join(f"s{i} is ok\t{i % 2}\n" for i in range(20)))
    return ["--model", str(model), "--data-dir", str(data), "--runs-dir", str(runs), "--run-name", "r", "--dtype",
            "fp32", *more]


def fails(capsys, main, argv) -> str:
    """The one line a script ends with (exit code 2, no traceback)."""
    with pytest.raises(SystemExit) as e:
        flags.run(lambda: main(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith("error: ") and not any("Traceback" in line for line in err)
    return err[-1]


def test_a_full_disk_leaves_the_run_as_it_was(tmp_path, tiny_llama_folder, mounts, monkeypatch, capsys):
    """--resume --epochs 2 on a full disk: one line naming the file and the cause, no temp file, every file of the
    run as it was (so --epochs 1 still resumes); with space again, --epochs 2 continues. An --export that does not
    fit leaves no temp folder and an unfinished run (no metrics.json) that --resume finishes."""
    import train_cls
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(tmp_path / "cache"))
    runs = mounts.tmpfs(tmp_path / "runs", "2m")
    argv = cls_flags(tmp_path, tiny_llama_folder, runs, "--epochs", "1")
    assert train_cls.main(argv) == 0
    before = snapshot(runs)
    fill(runs / "r")
    line = fails(capsys, train_cls.main, [*argv[:-1], "2", "--resume"])
    assert "cannot write" in line and "(No space left on device); free space" in line and str(runs / "r") in line
    assert snapshot(runs) == before
    (runs / "r" / ".filler").unlink()
    assert train_cls.main([*argv, "--resume"]) == 0  # --epochs 1 is the run as it was
    assert train_cls.main([*argv[:-1], "2", "--resume"]) == 0
    assert RunDir(runs / "r").read_json("config.json")["epochs"] == 2
    assert len((runs / "r" / "log.jsonl").read_text().splitlines()) == 2
    # an export onto a full disk
    full = mounts.full(tmp_path / "exports", "64k")
    line = fails(capsys, train_cls.main, [*argv[:-1], "3", "--resume", "--export", str(full / "e")])
    assert f"cannot write {full / 'e'} (No space left on device)" in line
    assert [p.name for p in full.iterdir()] == [".filler"]
    assert not (runs / "r" / "metrics.json").exists()  # epoch 3 saved, its summary not: an unfinished run
    assert train_cls.main([*argv[:-1], "3", "--resume", "--export", str(tmp_path / "e")]) == 0
    assert (runs / "r" / "metrics.json").is_file() and (tmp_path / "e" / "config.json").is_file()


def test_a_read_only_run_is_one_line_before_any_work(tmp_path, tiny_llama_folder, mounts, monkeypatch, capsys):
    import train_cls
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(tmp_path / "cache"))
    argv = cls_flags(tmp_path, tiny_llama_folder, tmp_path / "runs", "--epochs", "1")
    assert train_cls.main(argv) == 0
    before = snapshot(tmp_path / "runs" / "r")
    mounts.read_only(tmp_path / "runs" / "r")
    monkeypatch.setattr(train_cls.model, "load_backbone", lambda *a, **k: pytest.fail("work began"))
    line = fails(capsys, train_cls.main, [*argv[:-1], "2", "--resume"])
    assert f"cannot write {tmp_path / 'runs' / 'r'} (Read-only file system)" in line
    assert snapshot(tmp_path / "runs" / "r") == before


@pytest.mark.parametrize("how", ["file", "under-a-file"])
def test_a_cache_that_is_a_file_is_one_line(tmp_path, tiny_llama_folder, how):
    (tmp_path / "file").write_text("x")
    cache = tmp_path / "file" if how == "file" else tmp_path / "file" / "cache"
    env = {"LLAMA_HEADS_CACHE": str(cache)}
    cls = run_script("train_cls.py", *cls_flags(tmp_path, tiny_llama_folder, tmp_path / "runs"), env=env)
    qa = run_script("train_qa.py", "--model", "smollm2-135m", "--train-file", str(SQUAD), "--eval-file",
                    str(SQUAD.with_name("squad_test.json")), env=env)
    predict = run_script("predict.py", str(tmp_path / "runs" / "r"), "--text", "x", env=env)
    for out in (cls, qa, predict):
        assert_one_line_error(out, f"the cache {cache} (LLAMA_HEADS_CACHE): {tmp_path / 'file'} is a file, not a "
                              "folder")


def test_a_full_cache_keeps_the_features_in_memory(tmp_path, tiny_llama_folder, mounts, monkeypatch, capsys):
    import train_cls
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(mounts.full(tmp_path / "cache", "64k")))
    assert train_cls.main(cls_flags(tmp_path, tiny_llama_folder, tmp_path / "runs", "--epochs", "1")) == 0
    err = capsys.readouterr().err
    assert "feature cache: cannot write" in err and "the features are kept in memory only" in err
    assert [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()] == [".filler"]


def test_checkpoints_load_weights_only(tmp_path, capsys):
    """Only tensors and plain values load: a ckpt.pt holding any other pickled object is refused in one line (it
    could run code); a checkpoint of plain values from before (torch.save of the same dict) loads."""
    import torch
    run = RunDir.open(tmp_path / "r", CONFIG, resume=False, overwrite=False)
    state = {"trained": {"head.weight": torch.ones(2, 3)}, "rng": torch.get_rng_state(), "rows": [{"epoch": 1}],
             "epoch": 1, "ema": None, "sched": {"base_lrs": [0.1], "lr_lambdas": [None]}}
    run.save_epoch([{"epoch": 1}], state)
    loaded = run.load_checkpoint(torch.device("cpu"))
    assert loaded["epoch"] == 1 and loaded["rng"].equal(state["rng"]) and loaded["rows"] == [{"epoch": 1}]
    torch.save(state, run.file("ckpt.pt"))  # as runs before this change saved it
    assert run.load_checkpoint(torch.device("cpu"))["trained"]["head.weight"].equal(torch.ones(2, 3))
    torch.save({**state, "evil": Path("/")}, run.file("ckpt.pt"))  # any class: pickle would call it on load
    with pytest.raises(RunError, match="holds Python objects besides tensors and plain values") as e:
        run.load_checkpoint(torch.device("cpu"))
    assert "--overwrite" in str(e.value) and "\n" not in str(e.value)


def test_a_failed_first_write_of_an_overwrite_keeps_the_old_run(tmp_path, monkeypatch):
    """--overwrite removes the old run only once the new run's first epoch is written whole: a full disk then
    leaves the old run, config included, and no temp file."""
    import errno

    import torch
    RunDir.open(tmp_path / "r", CONFIG, resume=False, overwrite=False)
    (tmp_path / "r" / "head.safetensors").write_bytes(b"the first run's head")
    before = snapshot(tmp_path / "r")
    run = RunDir.open(tmp_path / "r", {**CONFIG, "lr": 1.0}, resume=False, overwrite=True)

    def disk_full(state, f):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match=r"cannot write .*ckpt.pt \(No space left on device\); free space"):
        run.save_epoch([{"epoch": 1}], {"epoch": 1})
    assert snapshot(tmp_path / "r") == before
