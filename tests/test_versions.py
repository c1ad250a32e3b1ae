"""The embedded model is the same under every supported version, and every declared lower bound is tested.

CI runs this file twice: with the newest releases (`make setup`) and in a fresh venv holding exactly the lower
bounds (requirements-min.txt). The pinned ids, files and logits below are what both must produce.
"""
import hashlib
import importlib.metadata
import json
import os
import re
from pathlib import Path

import pytest
import torch

import model
import smollm2

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["Hello world 2024!", "  Ünïcödé – “quotes” <|im_end|>\tend"]
IDS = [[19556, 905, 216, 34, 32, 34, 36, 17],
       [216, 5549, 246, 94, 25972, 83, 7466, 84, 2756, 816, 619, 385, 2346, 573, 216, 2, 197, 486]]
# sha256 of every small file of the conversion (FORMAT 2); model.safetensors is pinned through its logits
FILES = {
    "config.json": "3043ef88958640ded4c9f226b4e7ff91d0b7b6cad5c07aa41c401c29320d4501",
    "generation_config.json": "8025b6679dcf077f5d339bd154238d70891decb48f35f294bfaa33a343140439",
    "tokenizer.json": "026a162cf90246b399885f91cd7c2b2c0a1930f8e97b0cf83c49fb8e9123e949",
    "tokenizer_config.json": "dfb3e302024f518f59e7edf475913b8cd22e9d2cc7f2d2bd03bb022a3738342f",
}


@pytest.fixture(scope="module")
def tokenizer(smollm2_folder):
    return model.load_tokenizer(str(smollm2_folder))


def test_embedded_tokenizer_adds_no_bos_and_pads_right_with_eos(tokenizer):
    assert tokenizer.is_fast
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|im_end|>", 2)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<|im_start|>", 1)  # named, never added
    assert tokenizer.padding_side == "right" and len(tokenizer) == 49152
    assert [tokenizer(s).input_ids for s in SENTENCES] == IDS  # no BOS in front, no EOS behind
    assert tokenizer("question", "context").input_ids == tokenizer("question").input_ids + tokenizer("context").input_ids
    batch = tokenizer(SENTENCES, padding=True)
    assert set(batch.keys()) == {"input_ids", "attention_mask"}  # no token_type_ids, whatever the version
    short = len(IDS[0])
    assert batch["input_ids"][0] == IDS[0] + [2] * (len(IDS[1]) - short)
    assert batch["attention_mask"][0] == [1] * short + [0] * (len(IDS[1]) - short)
    offsets = tokenizer(SENTENCES[0], return_offsets_mapping=True)["offset_mapping"]
    assert offsets[:3] == [(0, 5), (5, 11), (11, 12)]  # a token's leading space is in its span


def test_embedded_model_files_are_pinned(smollm2_folder):
    assert smollm2_folder.name == f"{smollm2.NAME}-v{smollm2.FORMAT}"
    assert json.loads((smollm2_folder / smollm2.MARKER).read_text())["format"] == smollm2.FORMAT
    assert {name: hashlib.sha256((smollm2_folder / name).read_bytes()).hexdigest() for name in FILES} == FILES


def test_embedded_model_logits_are_pinned(smollm2_folder, tokenizer):
    from transformers import AutoModelForCausalLM
    lm = AutoModelForCausalLM.from_pretrained(smollm2_folder, dtype=torch.float32).eval()
    assert lm.lm_head.weight.data_ptr() == lm.model.embed_tokens.weight.data_ptr()  # tied, as in the GGUF
    batch = tokenizer(["The capital of France is", "Hi"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = lm(**batch).logits
    top = logits[0, -1].topk(5)
    assert top.indices.tolist() == [7042, 260, 4528, 2250, 1315]  # " Paris" first
    torch.testing.assert_close(top.values, torch.tensor([17.3713, 14.8886, 13.2450, 13.0095, 12.9515]),
                               atol=2e-3, rtol=0)
    torch.testing.assert_close(logits[0, :, 0], torch.tensor([15.6553, 8.7507, 0.1120, 11.4061, 1.6136]),
                               atol=2e-3, rtol=0)


def test_stale_or_partial_conversion_is_converted_again(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(tmp_path))
    converted = []
    monkeypatch.setattr(smollm2, "convert", converted.append)
    folder = tmp_path / "models" / f"{smollm2.NAME}-v{smollm2.FORMAT}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # interrupted: no marker
    assert smollm2.local_folder() == folder and converted == [folder]
    (folder / smollm2.MARKER).write_text(json.dumps({"format": smollm2.FORMAT - 1}))  # older layout
    smollm2.local_folder()
    assert converted == [folder, folder]
    (folder / smollm2.MARKER).write_text(json.dumps({"format": smollm2.FORMAT}))
    smollm2.local_folder()
    assert converted == [folder, folder]


def requirement_bounds(path: Path, op: str) -> dict[str, str]:
    """{normalised name: version} of every `name<op>version` line of a requirements file."""
    bounds = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if m := re.fullmatch(rf"([A-Za-z0-9_.\-]+)\s*{re.escape(op)}\s*([^\s,;]+)", line):
            bounds[re.sub(r"[-_.]+", "-", m[1]).lower()] = m[2]
    return bounds


def test_every_lower_bound_is_pinned_in_requirements_min():
    from packaging.version import Version
    pins = requirement_bounds(ROOT / "requirements-min.txt", "==")
    for path in sorted(ROOT.glob("requirements*.txt")):
        if path.name == "requirements-min.txt":
            continue
        for name, low in requirement_bounds(path, ">=").items():
            assert name in pins, f"{path.name}: {name}>={low} has no pin in requirements-min.txt"
            assert Version(pins[name]) == Version(low), f"{path.name}: {name}>={low}, requirements-min.txt: =={pins[name]}"


@pytest.mark.skipif(os.environ.get("LLAMA_HEADS_MIN_ENV") != "1", reason="only in CI's lower-bound venv")
def test_min_env_has_exactly_the_pinned_versions():
    from packaging.version import Version
    for name, pin in requirement_bounds(ROOT / "requirements-min.txt", "==").items():
        installed = importlib.metadata.version(name)
        assert Version(installed).release == Version(pin).release, f"{name} {installed}, pinned =={pin}"
