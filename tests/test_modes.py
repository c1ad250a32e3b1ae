"""The three training modes x the two tasks, end to end on the tiny Llama: the invariants every mode keeps.

- metrics.json records the mode as data;
- a run interrupted in its last epoch and resumed ends bit-identical to an uninterrupted one;
- the export (fp32) reloads in plain transformers with the run's own logits.
(What one step changes per mode, and trunk + top = the whole backbone: tests/test_lora.py.)"""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

import model
import modes
import train_cls
import train_qa
from batching import pad_batch
from flags import mode as mode_of
from helpers import crash_in_epoch, data_dir_cut, log_rows
from rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
CPU = torch.device("cpu")
SENTENCES = ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate", "dull"]
MODES = {"head": [], "top": ["--unfreeze-last", "1", "--backbone-lr", "1e-3"],
         "lora": ["--lora-rank", "4", "--lora-dropout", "0.1"]}
TASKS = {"cls": (train_cls, lambda sst2: ["--data-dir", str(sst2)]),
         "qa": (train_qa, lambda _: ["--train-file", str(SAMPLES / "squad_train.json"), "--eval-file",
                                     str(SAMPLES / "squad_test.json"), "--max-train-examples", "30",
                                     "--max-eval-examples", "10"])}


@pytest.fixture(scope="module")
def sst2(tmp_path_factory):
    return data_dir_cut(tmp_path_factory.mktemp("sst2"), "sst2", 60, 20)


def rebuilt(folder, task: str, flags: list[str], run: Path):
    """The run's model from its folder: the base, prepared by the run's mode, with its trained weights."""
    script = TASKS[task][0]
    lm, tok = model.load_backbone(str(folder), CPU, torch.float32)
    head = model.cls_head(lm.config.hidden_size, 2) if task == "cls" else model.qa_head(lm.config.hidden_size)
    mode = mode_of(script.parse_args(["--model", str(folder), *flags]))
    mode.prepare(lm.model)
    head.load_state_dict(load_file(run / "head.safetensors"))
    if mode.trains_backbone:
        modes.load_trained(lm.model, head, RunDir(run).load_trained(task), run)
    return lm.eval(), tok, head.eval(), mode


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", MODES)
def test_resume_is_bit_identical_and_export_gives_the_run_logits(tmp_path, monkeypatch, tiny_llama_folder, sst2,
                                                                 name, task):
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(tmp_path / "cache"))
    script, data = TASKS[task]
    flags = MODES[name]

    def run(run_name, *more):
        return script.main(["--model", str(tiny_llama_folder), *data(sst2), "--epochs", "2", "--dtype", "fp32",
                            "--runs-dir", str(tmp_path / "runs"), "--run-name", run_name, *flags, *more])
    export = ["--export", str(tmp_path / "export")] + (["--merge"] if name == "lora" else [])
    assert run("straight", *export) == 0
    with crash_in_epoch(2):
        run("crashed")
    assert run("crashed", "--resume") == 0
    straight, resumed = tmp_path / "runs" / "straight", tmp_path / "runs" / "crashed"
    assert json.loads((straight / "metrics.json").read_text())["mode"] == name
    files = ["head.safetensors"] + ([RunDir(straight).trained_file().name] if flags else [])
    for f in files:
        a, b = load_file(straight / f), load_file(resumed / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    assert log_rows(straight) == log_rows(resumed)

    lm, tok, head, mode = rebuilt(tiny_llama_folder, task, flags, straight)
    assert mode.name == name
    ids, mask = pad_batch([tok(s)["input_ids"] for s in SENTENCES], tok.pad_token_id, CPU)
    auto = AutoModelForSequenceClassification if task == "cls" else AutoModelForQuestionAnswering
    exported = auto.from_pretrained(tmp_path / "export", dtype="auto").eval()
    assert exported.dtype == model.EXPORT_DTYPE
    loaded = [exported]
    if name == "lora":  # the run folder holds the adapters in PEFT's format too: peft itself reads them
        loaded.append(peft_model(auto, tiny_llama_folder, straight))
    with torch.no_grad():
        hidden = lm.model(input_ids=ids).last_hidden_state
        for other in loaded:
            out = other(input_ids=ids, attention_mask=mask)
            if task == "cls":
                torch.testing.assert_close(out.logits, head(model.pool(hidden, mask)), atol=1e-5, rtol=0)
            else:
                ours, real = head(hidden), mask.bool()
                torch.testing.assert_close(out.start_logits[real], ours[..., 0][real], atol=1e-5, rtol=0)
                torch.testing.assert_close(out.end_logits[real], ours[..., 1][real], atol=1e-5, rtol=0)


def peft_model(auto, base: Path, adapters: Path):
    """PeftModel on the base model, as the card's snippet builds it (the QA class's backbone filled explicitly)."""
    from peft import PeftModel
    from transformers import AutoConfig, AutoModel
    if auto is AutoModelForQuestionAnswering:
        plain = auto.from_config(AutoConfig.from_pretrained(base))
        plain.base_model.load_state_dict(AutoModel.from_pretrained(base).state_dict())
    else:
        plain = auto.from_pretrained(base, num_labels=2)
    return PeftModel.from_pretrained(plain, adapters).eval()
