"""rundir.py: a run is never silently replaced, --resume refuses a run made otherwise (naming what differs),
damaged files are one-line errors, and every JSON file is strict."""
import json
import math

import pytest

from helpers import assert_one_line_error, run_script
from rundir import RunDir, RunError, strict_json

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
    run.write_log([{"epoch": 1, "train_loss": 0.5}])
    assert sorted(f.name for f in run.path.iterdir()) == ["config.json", "log.jsonl"]
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
