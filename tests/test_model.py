"""model.py and engine.py: pooling, heads, parameter counts, dtype and pad-token choice, transformers exports,
length batching and the resumable feature cache."""
import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st
from safetensors import safe_open
from safetensors.torch import load_file

import engine
import model
import train_cls

ROOT = Path(__file__).resolve().parents[1]
LLAMA_1B = str(ROOT / "bench" / "llama-3.2-1b")
SENTENCES = ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate", "dull",
             "it 's a charming and often affecting journey ."]


# --- pooling -----------------------------------------------------------------------------------------------

def positions():
    """hidden[b, t] = (b, t), so a pooled row says which position it came from."""
    b, t = torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="ij")
    mask = torch.tensor([[1, 1, 1, 0, 0],   # right padding
                         [0, 0, 1, 1, 1],   # left padding
                         [1, 1, 1, 1, 1],   # no padding
                         [1, 0, 0, 0, 0],   # one token, right padded
                         [0, 0, 0, 0, 1]])  # one token, left padded
    return torch.stack([b, t], -1), mask


def test_pool_last_picks_last_attended_token_for_either_padding_side():
    hidden, mask = positions()
    pooled = model.pool(hidden, mask, "last")
    assert pooled[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert pooled[:, 1].tolist() == [2, 4, 4, 0, 4]


def test_pool_mean_is_the_masked_mean():
    torch.manual_seed(0)
    _, mask = positions()
    hidden = torch.randn(5, 5, 8)
    hidden[mask == 0] = 1e6  # padding must not leak into the mean
    want = torch.stack([hidden[b, mask[b].bool()].mean(0) for b in range(5)])
    torch.testing.assert_close(model.pool(hidden, mask, "mean"), want)


def test_pool_unknown_raises():
    hidden, mask = positions()
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        model.pool(hidden, mask, "max")


# --- heads and parameter counts ----------------------------------------------------------------------------

def assert_init(weight):
    assert abs(weight.std().item() - 0.02) < 5e-4 and abs(weight.mean().item()) < 1e-3


def test_cls_head_matches_llama_for_sequence_classification():
    from transformers import LlamaConfig, LlamaForSequenceClassification
    torch.manual_seed(0)
    head = model.cls_head(4096, 3)
    assert head.weight.shape == (3, 4096) and head.bias is None
    assert_init(head.weight)
    with torch.device("meta"):
        score = LlamaForSequenceClassification(LlamaConfig(hidden_size=64, num_labels=3, num_hidden_layers=1)).score
    assert (score.out_features, score.bias) == (3, None)


def test_qa_head_matches_llama_for_question_answering():
    from transformers import LlamaConfig, LlamaForQuestionAnswering
    torch.manual_seed(0)
    head = model.qa_head(4096)
    assert head.weight.shape == (2, 4096) and head.bias.shape == (2,)
    assert head.bias.tolist() == [0.0, 0.0]
    assert_init(head.weight)
    with torch.device("meta"):
        qa = LlamaForQuestionAnswering(LlamaConfig(hidden_size=64, num_hidden_layers=1)).qa_outputs
    assert qa.out_features == 2 and qa.bias is not None


def test_llama_3_2_1b_parameter_counts():
    backbone = model.meta_backbone(LLAMA_1B)
    assert (model.n_params(backbone), backbone.config.hidden_size) == (1_235_814_400, 2048)
    assert model.param_report(backbone, model.cls_head(2048, 2)) == \
        {"backbone": 1_235_814_400, "head": 4_096, "total": 1_235_818_496, "trainable": 4_096}
    assert model.param_report(backbone, model.qa_head(2048)) == \
        {"backbone": 1_235_814_400, "head": 4_098, "total": 1_235_818_498, "trainable": 4_098}


def test_count_params_only_cli():
    out = subprocess.run([sys.executable, "train_cls.py", "--model", "bench/llama-3.2-1b", "--count-params-only"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"backbone": 1_235_814_400, "head": 4_096, "total": 1_235_818_496,
                                      "trainable": 4_096}


# --- device, dtype, tokenizer ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)])
def test_pick_dtype_explicit(name, dtype):
    for device in ("cpu", "cuda"):
        assert model.pick_dtype(torch.device(device), name) is dtype


def test_pick_dtype_auto_and_device():
    fast_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert model.pick_dtype(torch.device("cpu")) is (torch.bfloat16 if fast_bf16 else torch.float32)
    assert model.pick_device("cpu") == torch.device("cpu")
    assert model.pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert model.pick_dtype(torch.device("cuda")) in (torch.bfloat16, torch.float16)


def tokenizer_without_pad(folder, src, extra_tokens=()):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(src)
    if extra_tokens:
        tok.add_special_tokens({"additional_special_tokens": list(extra_tokens)})
    tok.pad_token = None
    tok.save_pretrained(folder)
    assert AutoTokenizer.from_pretrained(folder).pad_token_id is None
    return folder


def test_load_tokenizer_keeps_an_existing_pad(tiny_llama_folder, smollm2_tokenizer):
    assert model.load_tokenizer(str(tiny_llama_folder)).pad_token_id == smollm2_tokenizer.pad_token_id


def test_load_tokenizer_falls_back_to_eos(tmp_path, tiny_llama_folder):
    tok = model.load_tokenizer(str(tokenizer_without_pad(tmp_path, tiny_llama_folder)))
    assert tok.pad_token == tok.eos_token == "<|im_end|>"


def test_load_tokenizer_prefers_llama3_finetune_pad(tmp_path, tiny_llama_folder):
    pad = "<|finetune_right_pad_id|>"
    tok = model.load_tokenizer(str(tokenizer_without_pad(tmp_path, tiny_llama_folder, [pad])))
    assert tok.pad_token == pad and tok.pad_token_id == tok.convert_tokens_to_ids(pad) != tok.eos_token_id


# --- transformers exports ----------------------------------------------------------------------------------

def our_hidden(folder, texts):
    """Our pipeline's last hidden states (fp32) for texts, batched with right padding as train_cls does."""
    lm, tok = model.load_backbone(str(folder), torch.device("cpu"), torch.float32)
    seqs, _ = train_cls.tokenize(tok, texts, 256)
    ids, mask = engine.pad_batch(seqs, tok.pad_token_id, torch.device("cpu"))
    assert mask.sum(1).unique().numel() > 1  # really padded
    with torch.no_grad():
        return ids, mask, lm.model(input_ids=ids, attention_mask=mask).last_hidden_state, tok


def test_export_cls_gives_our_logits(tmp_path, monkeypatch, tiny_llama_folder):
    from transformers import AutoModelForSequenceClassification
    monkeypatch.setenv("LLAMA_HEADS_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    rows = "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(SENTENCES * 5))
    for name in ("train.tsv", "dev.tsv"):
        (data / name).write_text("sentence\tlabel\n" + rows)
    assert train_cls.main(["--model", str(tiny_llama_folder), "--data-dir", str(data), "--epochs", "1",
                           "--dtype", "fp32", "--runs-dir", str(tmp_path), "--run-name", "run",
                           "--export", str(tmp_path / "export")]) == 0
    weight = load_file(tmp_path / "run" / "head.safetensors")["weight"]
    ids, mask, hidden, tok = our_hidden(tiny_llama_folder, SENTENCES)
    ours = model.pool(hidden, mask, "last") @ weight.T

    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "export", dtype=torch.float32).eval()
    assert exported.config.id2label == {0: "0", 1: "1"} and exported.config.pad_token_id == tok.pad_token_id
    with torch.no_grad():
        theirs = exported(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)


def test_export_qa_loads_the_backbone_under_transformer(tmp_path, tiny_llama_folder):
    from transformers import AutoModelForQuestionAnswering, LlamaForQuestionAnswering
    torch.manual_seed(0)
    head = model.qa_head(32)
    torch.nn.init.normal_(head.bias)  # a trained head has a bias; check it survives
    weight, bias = head.weight.detach().clone(), head.bias.detach().clone()
    ids, mask, hidden, tok = our_hidden(tiny_llama_folder, SENTENCES)
    model.export(tmp_path / "qa", str(tiny_llama_folder), "qa", head, tok)
    with safe_open(tmp_path / "qa" / "model.safetensors", "pt") as f:
        assert {k.split(".")[0] for k in f.keys()} == {"transformer", "qa_outputs"}

    ours = hidden @ weight.T + bias
    exported = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "qa", dtype=torch.float32).eval()
    with torch.no_grad():
        out = exported(input_ids=ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(out.start_logits[real], ours[..., 0][real], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.end_logits[real], ours[..., 1][real], atol=1e-4, rtol=0)

    # the check has teeth: the same head on a random backbone gives other logits
    torch.manual_seed(1)
    random_backbone = LlamaForQuestionAnswering(exported.config).eval()
    random_backbone.qa_outputs.load_state_dict(exported.qa_outputs.state_dict())
    with torch.no_grad():
        other = random_backbone(input_ids=ids, attention_mask=mask).start_logits
    assert (other[real] - ours[..., 0][real]).abs().max() > 1e-2


# --- length batches ----------------------------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 300), max_size=200), st.integers(1, 2048), st.integers(1, 64))
def test_length_batches_cover_once_and_fit(lengths, max_tokens, max_batch):
    batches = engine.length_batches(lengths, max_tokens, max_batch)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert b and len(b) <= max_batch
        assert max(lengths[i] for i in b) * len(b) <= max_tokens or len(b) == 1  # only a lone long item may exceed


def padding_overhead(lengths, batches):
    return sum(max(lengths[i] for i in b) * len(b) for b in batches) / sum(lengths) - 1


def test_length_batches_leave_little_padding_on_sst2(smollm2_tokenizer):
    from data.labelled import read_labelled
    texts = read_labelled(ROOT / "data" / "samples" / "sst2" / "train.tsv").texts
    lengths = [len(s) for s in smollm2_tokenizer(texts)["input_ids"]]
    batches = engine.length_batches(lengths, 1024)
    shuffled = list(range(len(lengths)))
    random.Random(0).shuffle(shuffled)
    sizes = [len(b) for b in batches]
    unsorted = [shuffled[start:start + n] for start, n in zip(itertools.accumulate([0] + sizes), sizes)]
    assert padding_overhead(lengths, batches) < 0.1  # measured 4%
    assert padding_overhead(lengths, unsorted) > 1.0  # the same batch sizes, unsorted: ~2.5x the tokens


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
    assert_in_input_order(engine.cached_features(path, seqs, computer(seqs, calls), chunk=4), seqs)
    assert len(calls) == 3 and path.exists() and not path.with_suffix(".parts").exists()
    again = engine.cached_features(path, seqs, computer(seqs, calls, fail_on_call=4), chunk=4)
    assert len(calls) == 3  # loaded from disk
    assert_in_input_order(again, seqs)


def test_cached_features_resume_after_interruption(tmp_path, seqs):
    path, calls = tmp_path / "f.safetensors", []
    with pytest.raises(RuntimeError, match="interrupted"):
        engine.cached_features(path, seqs, computer(seqs, calls, fail_on_call=2), chunk=4)
    assert not path.exists() and len(list(path.with_suffix(".parts").iterdir())) == 1

    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    resumed = []
    feats = engine.cached_features(path, seqs, computer(seqs, resumed), chunk=4)
    assert resumed == [order[4:8], order[8:]]  # only the chunks that were not saved
    assert_in_input_order(feats, seqs)
    assert path.exists() and not path.with_suffix(".parts").exists()


def test_a_new_hub_revision_misses_the_old_features(tmp_path, tiny_llama_folder):
    """--model org/name read from a Hub cache (offline): the cache key holds the snapshot's commit."""
    import shutil
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
    engine.cached_features(tmp_path / "f.safetensors", seqs, compute)
    back = engine.cached_features(tmp_path / "f.safetensors", seqs, None)
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
    for batch, hidden, mask in engine.backbone_passes(lm.model, seqs, tok.pad_token_id, 10**6, "test",
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
    for batch, feats in engine.backbone_features(lm.model, seqs, tok.pad_token_id, 32, "test", pick):
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
    args = train_cls.parse_args(["--compile"])
    compiled = engine.feature_module(lm.model, args)
    assert compiled is engine.feature_module(lm.model, args) and compiled is not lm.model
    assert engine.feature_module(lm.model, train_cls.parse_args([])) is lm.model
    seqs = [tok(s)["input_ids"] for s in SENTENCES]
    order = [[2], [0, 1, 3]]  # "dull" alone, then three longer sentences
    eager = [hidden for _, hidden, _ in engine.backbone_passes(lm.model, seqs, tok.pad_token_id, 10**6, "e", order)]
    fast = [hidden for _, hidden, _ in engine.backbone_passes(compiled, seqs, tok.pad_token_id, 10**6, "c", order)]
    assert [h.shape for h in eager] == [h.shape for h in fast] and eager[0].shape[1] != eager[1].shape[1]
    for a, b in zip(eager, fast):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
