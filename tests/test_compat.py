"""Exports load with the run's numbers in every transformers version the project supports, across versions.

CI runs this file in the lower-bound venv with LLAMA_HEADS_OTHER_PYTHON set to the newest releases' interpreter
(.ci/run): each side exports with its own transformers (tests/compat_worker.py) and the other side loads the exports
as a user would (pipeline, AutoModelForQuestionAnswering). Without another interpreter the same checks run within
this one version. The base is a tiny random Llama whose config.json is laid out as Llama 3.2's (rope_theta 500000,
llama3 rope scaling), so a version that misread the rope settings would give other numbers.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import model
import train_cls

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import compat_worker  # noqa: E402

OTHER = os.environ.get("LLAMA_HEADS_OTHER_PYTHON")
ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}


@pytest.fixture(scope="module")
def llama3_folder(tmp_path_factory, smollm2_folder) -> Path:
    """A random 2-layer Llama with Llama 3's rope settings in the layout Llama 3.2's config.json has (4.x keys),
    and the embedded model's tokenizer files (written by smollm2.py, which every version reads alike)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = dict(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, pad_token_id=2, bos_token_id=1, eos_token_id=2,
                  tie_word_embeddings=True, rms_norm_eps=1e-5)
    folder = tmp_path_factory.mktemp("llama3-style")
    LlamaForCausalLM(LlamaConfig(**config)).save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForCausalLM"],
                                                    "model_type": "llama", "rope_theta": 500000.0,
                                                    "rope_scaling": ROPE, "torch_dtype": "float32"}))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((smollm2_folder / name).read_bytes())
    return folder


def worker(python: str, *args) -> None:
    r = subprocess.run([python, str(Path(__file__).parent / "compat_worker.py"), *map(str, args)], cwd=ROOT,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def interpreters() -> list[tuple[str, str]]:
    if OTHER is None:
        assert os.environ.get("LLAMA_HEADS_MIN_ENV") != "1", \
            "CI's lower-bound run needs LLAMA_HEADS_OTHER_PYTHON (the newest releases' python): see .ci/run"
        return [(sys.executable, sys.executable)]
    return [(sys.executable, OTHER), (OTHER, sys.executable)]


@pytest.mark.parametrize("direction", range(len(interpreters())), ids=lambda i: ["export-here", "export-there"][i])
def test_exports_load_with_the_runs_numbers_across_versions(tmp_path, llama3_folder, direction):
    exporter, loader = interpreters()[direction]
    worker(exporter, "export", tmp_path, llama3_folder)
    worker(loader, "load", tmp_path)
    loaded = json.loads((tmp_path / "loaded.json").read_text())
    exported = json.loads((tmp_path / "exported.json").read_text())
    versions = exported["transformers"], loaded["transformers"]
    if OTHER is not None:  # a real cross-version check: one side is 4.x, the other 5.x
        assert {v[0] for v in versions} == {"4", "5"}, versions
    for name in ("cls", "lora", "qa"):  # both layouts of the rope settings, the same values
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert (config["rope_theta"], config["rope_scaling"]) == (500000.0, ROPE)
        assert config["rope_parameters"] == {"rope_theta": 500000.0, **ROPE}
        assert json.loads((tmp_path / name / "tokenizer_config.json").read_text())["tokenizer_class"] == \
            "PreTrainedTokenizerFast"
    worst = 0.0
    for name in ("cls", "pairs", "lora"):
        run = [json.loads(line) for line in (tmp_path / f"{name}.predict.jsonl").read_text().splitlines()]
        got = loaded[name]
        assert got["model_max_length"] == compat_worker.MAX_LENGTH[name]  # truncation=True cuts where the run did
        # rope_theta 500000 and llama3 scaling, as the loader applies them (4.x without its keys: theta 10000)
        torch.testing.assert_close(torch.tensor(got["inv_freq"]), torch.tensor(exported["inv_freq"]), rtol=1e-6,
                                   atol=0)
        for want, probs in zip(run, got["probabilities"], strict=True):
            assert set(probs) == set(compat_worker.NAMES)  # the run's label names
            worst = max(worst, *(abs(probs[k] - v) for k, v in want["probabilities"].items()))
    assert worst < 1e-4, worst
    logits_worst = max(abs(a - b) for want, start, end in zip(exported["qa_logits"], loaded["qa"]["start_logits"],
                                                              loaded["qa"]["end_logits"], strict=True)
                       for a, b in zip(want[0] + want[1], start + end, strict=True))
    assert logits_worst < 1e-4, logits_worst  # the QA head and backbone, read as the run computed them
    run = [json.loads(line) for line in (tmp_path / "qa.predict.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in run] == loaded["qa"]["answers"]
    qa_worst = max(abs(want["no_answer_probability"] - p)
                   for want, p in zip(run, loaded["qa"]["no_answer_probability"], strict=True))
    assert qa_worst < 1e-4, qa_worst
    print(f"\nexported by transformers {versions[0]}, loaded by {versions[1]}: max |p - predict.py| {worst:.2e}, "
          f"max |no-answer p - predict.py| {qa_worst:.2e}, max |QA logit - run's| {logits_worst:.2e}")


def test_the_long_inputs_are_cut_by_the_run(llama3_folder):
    """The checks above mean something: the long sentence and two of the pairs are longer than the run's
    --max-length (pipeline's truncation=True cuts a pair longest_first, as the run does)."""
    tok = model.load_tokenizer(str(llama3_folder))
    assert len(tok(compat_worker.SINGLE[2])["input_ids"]) > compat_worker.MAX_LENGTH["cls"]
    train_cls.pair_template(tok)
    lengths = [len(tok(a, b)["input_ids"]) for a, b in compat_worker.PAIRS]
    assert sum(n > compat_worker.MAX_LENGTH["pairs"] for n in lengths) == 2, lengths
