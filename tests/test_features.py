"""features.py: backbone passes (mask-free, compiled or not) and the on-disk feature cache (computed once,
resumed after an interruption, keyed by the model's revision, recovered when corrupt)."""
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import features
import model
from files import write_safetensors

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate", "dull",
             "it 's a charming and often affecting journey ."]


# --- feature cache -----------------------------------------------------------------------------------------

def feature(seq):
    return torch.tensor([float(sum(seq)), float(len(seq))])


def computer(seqs, calls, fail_on_call=None):
    """A compute(idx) that records its calls and yields (indices, features) in batches of 3."""
    def compute(idx):
        calls.append(list(idx))
        if len(calls) == fail_on_call:
            raise RuntimeError("interrupted")
        for lo in range(0, len(idx), 3):
            yield idx[lo:lo + 3], [feature(seqs[i]) for i in idx[lo:lo + 3]]
    return compute


@pytest.fixture
def seqs():
    rng = random.Random(0)
    return [[rng.randrange(1000) for _ in range(rng.randint(1, 20))] for _ in range(10)]


def assert_in_input_order(feats, seqs):
    assert len(feats) == len(seqs)
    for f, s in zip(feats, seqs):
        torch.testing.assert_close(f, feature(s))


def test_cached_features_computed_once(tmp_path, seqs):
    path, calls = tmp_path / "f.safetensors", []
    assert_in_input_order(features.cached_features(path, seqs, computer(seqs, calls), chunk=4), seqs)
    assert len(calls) == 3 and path.exists() and not path.with_suffix(".parts").exists()
    again = features.cached_features(path, seqs, computer(seqs, calls, fail_on_call=4), chunk=4)
    assert len(calls) == 3  # loaded from disk
    assert_in_input_order(again, seqs)


def test_features_not_kept_are_computed_in_the_same_chunks_and_leave_nothing(tmp_path, seqs):
    kept_calls, calls = [], []
    features.cached_features(tmp_path / "f.safetensors", seqs, computer(seqs, kept_calls), chunk=4)
    before = sorted(p for p in tmp_path.rglob("*"))
    assert_in_input_order(features.cached_features(None, seqs, computer(seqs, calls), chunk=4), seqs)
    assert calls == kept_calls  # the same chunks, hence the same batches and numbers
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_cached_features_resume_after_interruption(tmp_path, seqs):
    path, calls = tmp_path / "f.safetensors", []
    with pytest.raises(RuntimeError, match="interrupted"):
        features.cached_features(path, seqs, computer(seqs, calls, fail_on_call=2), chunk=4)
    assert not path.exists() and len(list(path.with_suffix(".parts").iterdir())) == 1

    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    resumed = []
    feats = features.cached_features(path, seqs, computer(seqs, resumed), chunk=4)
    assert resumed == [order[4:8], order[8:]]  # only the chunks that were not saved
    assert_in_input_order(feats, seqs)
    assert path.exists() and not path.with_suffix(".parts").exists()


def test_a_new_hub_revision_misses_the_old_features(tmp_path, tiny_llama_folder):
    """--model org/name read from a Hub cache (offline): the cache key holds the snapshot's commit."""
    repo, data = tmp_path / "hub" / "models--org--tiny", tmp_path / "data"
    data.mkdir()
    for name, copies in (("train.tsv", 5), ("dev.tsv", 2)):
        (data / name).write_text("sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n"
                                                                  for i, s in enumerate(SENTENCES * copies)))

    def run_at(revision: str) -> set[str]:
        shutil.copytree(tiny_llama_folder, repo / "snapshots" / revision, dirs_exist_ok=True)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
        out = subprocess.run([sys.executable, "train_cls.py", "--model", "org/tiny", "--data-dir", str(data),
                              "--epochs", "1", "--runs-dir", str(tmp_path / "runs"), "--run-name", revision[:4]],
                             cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
                                  "LLAMA_HEADS_CACHE": str(tmp_path / "cache"), "TQDM_DISABLE": "1"})
        assert out.returncode == 0, out.stderr[-2000:]
        return {f.name for f in (tmp_path / "cache" / "features").iterdir()}
    old = run_at("a" * 40)
    assert len(old) == 2  # train and test
    new = run_at("b" * 40)
    assert len(new) == 4 and old < new  # the new revision computed its own features


def test_cached_features_variable_length_items(tmp_path):
    """QA windows: per-item (n_i, H) matrices come back with their shapes."""
    items = [torch.randn(n, 4) for n in (3, 1, 5, 2)]
    seqs = [[0] * len(t) for t in items]

    def compute(idx):
        yield idx, [items[i] for i in idx]
    features.cached_features(tmp_path / "f.safetensors", seqs, compute)
    back = features.cached_features(tmp_path / "f.safetensors", seqs, None)
    for a, b in zip(back, items):
        torch.testing.assert_close(a, b)


# --- backbone passes ---------------------------------------------------------------------------------------

def test_backbone_passes_need_no_mask_for_right_padding(tiny_llama_folder):
    """Every real token of a right-padded batch gets the hidden state it gets alone: pads come after it, and a
    causal model never looks ahead, so the mask-free pass (SDPA's fused causal kernel) is exact."""
    lm, tok = model.load_backbone(str(tiny_llama_folder), torch.device("cpu"), torch.float32)
    seqs = [tok(s)["input_ids"] for s in SENTENCES]
    alone = [lm.model(input_ids=torch.tensor([s])).last_hidden_state[0] for s in seqs]
    seen = set()
    for batch, hidden, mask in features.backbone_passes(lm.model, seqs, tok.pad_token_id, 10**6, "test",
                                                      order=[list(range(len(seqs)))]):
        for row, i in enumerate(batch):
            assert mask[row].sum() == len(seqs[i])
            torch.testing.assert_close(hidden[row, :len(seqs[i])], alone[i], atol=1e-5, rtol=1e-5)
            seen.add(i)
    assert seen == set(range(len(seqs))) and len({len(s) for s in seqs}) > 1  # padding really happened


@pytest.mark.parametrize("variable", [False, True])
def test_backbone_features_yield_every_pick_once(tiny_llama_folder, variable):
    """Fixed-size picks (pooled vectors) and variable-length ones (QA context rows) come back per item, in
    host memory, each equal to the same pick from a direct pass."""
    lm, tok = model.load_backbone(str(tiny_llama_folder), torch.device("cpu"), torch.float32)
    seqs = [tok(s)["input_ids"] for s in SENTENCES * 3]

    def pick(batch, hidden, mask):
        if variable:
            return [hidden[r, 1:len(seqs[i])] for r, i in enumerate(batch)]
        return list(model.pool(hidden, mask).unbind(0))
    got = {}
    for batch, feats in features.backbone_features(lm.model, seqs, tok.pad_token_id, 32, "test", pick):
        assert all(f.device.type == "cpu" for f in feats)
        got.update(zip(batch, feats))
    assert sorted(got) == list(range(len(seqs)))
    for i, s in enumerate(seqs):
        hidden = lm.model(input_ids=torch.tensor([s])).last_hidden_state[0]
        torch.testing.assert_close(got[i], hidden[1:] if variable else hidden[-1], atol=1e-5, rtol=1e-5)


def test_compiled_feature_pass_gives_the_same_features(tiny_llama_folder):
    """--compile: the compiled backbone (dynamic shapes: batches of two lengths here) computes the same states,
    and is compiled once per backbone."""
    lm, tok = model.load_backbone(str(tiny_llama_folder), torch.device("cpu"), torch.float32)
    compiled = features.feature_module(lm.model, compile=True)
    assert compiled is features.feature_module(lm.model, compile=True) and compiled is not lm.model
    assert features.feature_module(lm.model, compile=False) is lm.model
    seqs = [tok(s)["input_ids"] for s in SENTENCES]
    order = [[2], [0, 1, 3]]  # "dull" alone, then three longer sentences
    eager = [hidden for _, hidden, _ in features.backbone_passes(lm.model, seqs, tok.pad_token_id, 10**6, "e", order)]
    fast = [hidden for _, hidden, _ in features.backbone_passes(compiled, seqs, tok.pad_token_id, 10**6, "c", order)]
    assert [h.shape for h in eager] == [h.shape for h in fast] and eager[0].shape[1] != eager[1].shape[1]
    for a, b in zip(eager, fast):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_compile_auto_compiles_the_passes_that_pay_for_it(tiny_llama_folder, monkeypatch, tmp_path):
    """--compile auto (Passes.compile None) compiles a split's pass from COMPILE_PAYS_FROM tokens on its device,
    and runs shorter ones eager; on and off are what they say."""
    from modes import Mode, Passes
    from train_cls import sentence_spec
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(tmp_path))
    monkeypatch.setitem(features.COMPILE_PAYS_FROM, "cpu", 20)
    assert features.compile_pays(20, torch.device("cpu")) and not features.compile_pays(19, torch.device("cpu"))
    assert not features.compile_pays(10**12, torch.device("mps"))  # never measured there: never on its own
    lm, tok = model.load_backbone(str(tiny_llama_folder), torch.device("cpu"), torch.float32)
    short, long = [[5, 6, 7]] * 6, [[5, 6, 7, 8]] * 6  # 18 and 24 tokens
    asked = []
    monkeypatch.setattr("modes.feature_module", lambda backbone, compile: asked.append(compile) or backbone)
    for compile in (None, True, False):
        passes = Passes(str(tiny_llama_folder), 64, compile, keep=False)
        for name, seqs in (("short", short), ("long", long)):
            Mode().source(lm, sentence_spec(name, seqs, tok.pad_token_id, "last"), passes)
    assert asked == [False, True, True, True, False, False]


def test_a_corrupt_or_short_cache_file_is_said_and_recomputed(tmp_path, seqs, capsys):
    path, calls = tmp_path / "f.safetensors", []
    features.cached_features(path, seqs, computer(seqs, calls), chunk=4)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    assert_in_input_order(features.cached_features(path, seqs, computer(seqs, calls), chunk=4), seqs)
    assert f"feature cache {path} does not load" in capsys.readouterr().err and len(calls) == 6
    write_safetensors(path, features.flatten([feature(s) for s in seqs[:3]]))  # another data's file
    assert_in_input_order(features.cached_features(path, seqs, computer(seqs, calls), chunk=4), seqs)
    assert "holds 3 items, not 10" in capsys.readouterr().err


def test_another_process_finishing_the_same_entry_does_not_break_this_one(tmp_path, seqs):
    """Two processes fill one cache entry: the other one finishes first and removes the .parts folder while this
    one is still computing; this one still saves its parts and ends with every feature."""
    path, parts = tmp_path / "f.safetensors", tmp_path / "f.parts"
    calls = []
    compute = computer(seqs, calls)

    def racing(idx):
        if len(calls) == 1 and parts.exists():
            shutil.rmtree(parts)  # what the other process does when it has merged its file
        yield from compute(idx)
    assert_in_input_order(features.cached_features(path, seqs, racing, chunk=4), seqs)
    assert path.exists() and not parts.exists()
