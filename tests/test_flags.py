"""flags.py: nonsense flags are refused before any work, in one line on stderr with exit code 2; the mode is
chosen once from the flags; user errors raised later end the same way."""
import sys

import pytest
import torch

import flags
import train_cls
import train_qa
from helpers import assert_one_line_error, run_script
from lrgrid import HeadGrid
from modes import LoRA, Mode, TopBlocks


@pytest.mark.parametrize("script", [train_cls, train_qa], ids=["cls", "qa"])
@pytest.mark.parametrize("argv, words", [
    (["--lr", "nan"], "--lr nan: must be a number > 0 and at most 10"),
    (["--lr", "-1"], "--lr -1.0: must be a number > 0 and at most 10"),
    (["--lr", "inf"], "--lr inf: must be a number > 0 and at most 10"),
    (["--lr", "1e38"], "--lr 1e+38: must be a number > 0 and at most 10"),
    (["--backbone-lr", "0"], "--backbone-lr 0.0: must be a number > 0 and at most 10"),
    (["--epochs", "0"], "--epochs 0: must be at least 1"),
    (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["--max-length", "0"], "--max-length 0: must be at least 1"),
    (["--grad-accum", "0"], "--grad-accum 0: must be at least 1"),
    (["--val-fraction", "1.5"], "--val-fraction 1.5: must be between 0 and 1"),
    (["--val-fraction", "0"], "--val-fraction 0.0: must be between 0 and 1"),
    (["--ema", "1"], "--ema 1.0: must be in [0, 1)"),
    (["--weight-decay", "nan"], "--weight-decay nan: must be a finite number >= 0"),
    (["--resume", "--overwrite"], "pass one"),
    (["--push-full", "--push-to-hub", "me/x"], "--push-full uploads the --export folder"),
    (["--epochs", "three"], "invalid int value"),
    (["--compile", "maybe"], "--compile: invalid choice: 'maybe'"),
    (["--lora-rank", "4", "--export", "x"], "needs one of --merge"),
    (["--lora-rank", "4", "--export", "x", "--merge", "--peft"], "--peft keeps them apart: pass one"),
    (["--export", "x", "--peft"], "--peft writes LoRA adapters in PEFT's format: it needs --lora-rank"),
    (["--lora-rank", "4", "--peft"], "it needs --lora-rank and --export DIR"),
    (["--lora-rank", "4", "--export", "x", "--peft", "--push-full", "--push-to-hub", "me/x"],
     "already holds its adapters in PEFT's format"),
    (["--seed", "-5"], "--seed -5: must be in [0, 2**32)"),
    (["--seed", "4294967296"], "--seed 4294967296: must be in [0, 2**32)"),
    (["--run-name", ".."], "--run-name '..': must be a plain folder name"),
    (["--run-name", "."], "--run-name '.': must be a plain folder name"),
    (["--run-name", "../escaped"], "--run-name '../escaped': must be a plain folder name"),
    (["--device", "foo"], "--device foo: not a device"),
    (["--lora-alpha", "4"], "--lora-alpha would do nothing without --lora-rank"),
    (["--unfreeze-last", "1", "--lora-targets", "foo"], "--lora-targets would do nothing without --lora-rank"),
    (["--backbone-lr", "0.5"], "--backbone-lr would do nothing without --lora-rank or --unfreeze-last"),
    (["--grad-checkpoint"], "--grad-checkpoint would do nothing without --lora-rank or --unfreeze-last"),
    (["--merge"], "--merge would do nothing without --lora-rank and --export"),
    (["--private"], "--private would do nothing without --push-to-hub"),
    (["--push-to-hub", "not a repo"], "--push-to-hub: bad REPO_ID 'not a repo'"),
    (["--lr", "fast"], "--lr: invalid learning_rate value: 'fast'"),
    (["--unfreeze-last", "1", "--lr", "auto"], "--lr auto trains a grid of heads"),
    (["--lora-rank", "4", "--lr", "auto"], "--lr auto trains a grid of heads"),
    (["--patience", "-1"], "--patience -1: must be at least 0"),
    (["--log-every", "-1"], "--log-every -1: must be at least 0"),
    (["--select", "worst"], "--select: invalid choice: 'worst'"),
    (["--report-to", "wandb"], "--report-to: invalid choice: 'wandb'"),
    (["--max-train-examples", "0"], "--max-train-examples 0: must be at least 1"),
    (["--max-eval-examples", "0"], "--max-eval-examples 0: must be at least 1"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_nonsense_flags_are_one_line_errors(script, argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        script.parse_args(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err


def test_flags_that_need_a_context(capsys, tmp_path):
    """--label-words acts only with --zero-shot; --device cuda only where torch sees a GPU; --export only on a new
    or empty folder, or on an earlier export with --overwrite (or --resume)."""
    cases = [(["--label-words", "bad,good"], "--label-words would do nothing without --zero-shot")]
    if not __import__("torch").cuda.is_available():
        cases.append((["--device", "cuda"], "this torch sees no CUDA GPU"))
    (tmp_path / "file").write_text("x")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.txt").write_text("precious")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "llama_heads.json").write_text("{}")
    cases += [(["--export", str(tmp_path / "file")], "is a file; pass a folder"),
              (["--export", str(tmp_path / "docs")], "holds other files"),
              (["--export", str(tmp_path / "old")], "holds an earlier export; pass --overwrite")]
    for argv, words in cases:
        with pytest.raises(SystemExit):
            train_cls.parse_args(argv)
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert train_cls.parse_args(["--export", str(tmp_path / "old"), "--overwrite"]).export
    (tmp_path / "empty").mkdir()
    assert train_cls.parse_args(["--export", str(tmp_path / "empty")]).export
    assert (tmp_path / "docs" / "thesis.txt").read_text() == "precious"


@pytest.mark.parametrize("export", ["runs/r", "runs", "runs/r/out"])
def test_export_never_replaces_or_sits_in_the_run_folder(tmp_path, monkeypatch, export):
    monkeypatch.chdir(tmp_path)
    args = train_cls.parse_args(["--export", export, "--run-name", "r"])
    with pytest.raises(flags.RunError, match="would replace the run folder"):
        flags.open_run(args, "sst2", Mode(), "digest")
    assert not (tmp_path / "runs").exists()


def test_refused_before_any_work():
    """From the shell: one line, no usage block, no traceback, and no model is ever loaded."""
    assert_one_line_error(run_script("train_cls.py", "--lr", "nan", "--model", "no/such-model"), "--lr nan")


def test_the_mode_is_chosen_once_from_the_flags():
    assert type(flags.mode(train_cls.parse_args([]))) is Mode
    top = flags.mode(train_qa.parse_args(["--unfreeze-last", "2", "--grad-checkpoint"]))
    assert isinstance(top, TopBlocks) and (top.k, top.grad_checkpoint, top.name) == (2, True, "top")
    lora = flags.mode(train_cls.parse_args(["--lora-rank", "4", "--lora-targets", "q_proj,v_proj"]))
    assert isinstance(lora, LoRA) and (lora.rank, lora.alpha, lora.targets) == (4, 8.0, ["q_proj", "v_proj"])
    args = train_cls.parse_args(["--lr", "0.01", "--epochs", "2", "--grad-accum", "3"])
    assert (flags.train_args(args, "accuracy").lr, flags.train_args(args, "accuracy").epochs,
            flags.train_args(args, "accuracy").grad_accum) == (0.01, 2, 3)


def test_the_mode_chooses_whether_lr_auto_is_the_default():
    """A grid of heads where the backbone is frozen; one head at the script's rate where blocks or adapters train."""
    head = train_cls.parse_args([])
    cfg = flags.train_args(head, "accuracy")
    assert head.lr == "auto" and isinstance(flags.trained_head(cfg, torch.nn.Linear(4, 2)), HeadGrid)
    assert cfg.lr is None
    assert train_cls.parse_args(["--unfreeze-last", "1"]).lr == 5e-3
    assert train_qa.parse_args(["--lora-rank", "4"]).lr == 2e-3
    one = train_cls.parse_args(["--lr", "0.02"])
    assert type(flags.trained_head(flags.train_args(one, "accuracy"), torch.nn.Linear(4, 2))) is torch.nn.Linear


def test_tensorboard_missing_is_one_line_before_any_work(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what an environment without it raises
    with pytest.raises(SystemExit) as e:
        train_cls.parse_args(["--report-to", "tensorboard", "--model", "no/such-model"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "pip install tensorboard" in err, err


@pytest.mark.parametrize("argv, compile", [([], None), (["--compile"], True), (["--compile", "on"], True),
                                           (["--compile", "off"], False), (["--compile", "auto"], None)])
def test_compile_is_auto_unless_asked(argv, compile):
    assert flags.passes(train_qa.parse_args(argv)).compile is compile


@pytest.fixture
def data(tmp_path):
    """A 20-row labelled folder: enough to reach the model loading."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (folder / name).write_text("sentence\tlabel\n" + "".join(f"s{i}\t{i % 2}\n" for i in range(20)))
    return folder


@pytest.mark.parametrize("model_flag, words", [
    ("/no/such/folder", "--model /no/such/folder: no such folder"),
    ("no/such-model", "--model no/such-model: not in the local Hugging Face cache, and the Hub is unreachable"),
])
def test_a_model_that_does_not_load_is_one_line(tmp_path, data, model_flag, words):
    out = run_script("train_cls.py", "--model", model_flag, "--data-dir", str(data), "--runs-dir", str(tmp_path))
    assert_one_line_error(out, words, "smollm2-135m")


def test_corrupt_model_files_are_one_line(tmp_path, data, tiny_llama_folder):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_llama_folder.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    out = run_script("train_cls.py", "--model", str(broken), "--data-dir", str(data), "--runs-dir",
                     str(tmp_path / "runs"))
    assert_one_line_error(out, f"--model {broken}: cannot load it")
    (broken / "config.json").write_text("{not json")
    out = run_script("train_cls.py", "--model", str(broken), "--data-dir", str(data), "--runs-dir",
                     str(tmp_path / "runs"), "--overwrite")
    assert_one_line_error(out, f"--model {broken}: cannot load it")
