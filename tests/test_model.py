"""model.py: pooling, heads, parameter counts, dtype and pad-token choice, loading errors, transformers exports."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import model
import train_cls
from batching import pad_batch

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


@pytest.mark.parametrize("task_flags, labels", [(["--task", "mnli"], 3), (["--task", "cola"], 2),
                                                (["--task", "custom", "--data-dir", "three"], 3)])
def test_count_params_has_a_head_row_per_label_of_the_task(task_flags, labels, tmp_path, capsys, monkeypatch):
    (tmp_path / "three").mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / "three" / name).write_text("sentence\tlabel\na\tx\nb\ty\nc\tz\n")
    monkeypatch.chdir(tmp_path)
    assert train_cls.main(["--model", LLAMA_1B, "--count-params-only", *task_flags]) == 0
    assert json.loads(capsys.readouterr().out)["head"] == 2048 * labels


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


OFFLINE_LOAD = """
import torch, model
lm, tok = model.load_backbone("test-org/tiny", torch.device("cpu"), torch.float32)
print(type(lm).__name__, type(model.meta_backbone("test-org/tiny")).__name__)
try:
    model.load_backbone("test-org/absent", torch.device("cpu"), torch.float32)
except model.ModelError as e:
    print(e)
"""


def test_an_unreachable_hub_loads_cached_models_at_once(tmp_path, tiny_llama_folder):
    """No network (a Hub endpoint that refuses connections, HF_HUB_OFFLINE unset): a cached Hub id loads from the
    cache and an uncached one fails with its one line, both without huggingface_hub's retries (~25 s a file)."""
    snapshot = tmp_path / "hub" / "models--test-org--tiny" / "snapshots" / "c0ffee"
    snapshot.mkdir(parents=True)
    for f in tiny_llama_folder.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("c0ffee")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", OFFLINE_LOAD], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**env, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "LlamaForCausalLM LlamaModel"
    assert lines[1].startswith("--model test-org/absent: not in the local Hugging Face cache, and the Hub is "
                               "unreachable (")
    assert "Retrying" not in out.stderr and "thrown while requesting" not in out.stderr


# --- transformers exports ----------------------------------------------------------------------------------

def our_hidden(folder, texts):
    """Our pipeline's last hidden states (fp32) for texts, batched with right padding as train_cls does."""
    lm, tok = model.load_backbone(str(folder), torch.device("cpu"), torch.float32)
    seqs = train_cls.tokenize(tok, texts, 256)
    ids, mask = pad_batch(seqs, tok.pad_token_id, torch.device("cpu"))
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
    assert exported.config.id2label == {0: "negative", 1: "positive"}  # SST-2's 0/1, named
    assert exported.config.pad_token_id == tok.pad_token_id
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
    model.export(tmp_path / "qa", str(tiny_llama_folder), "qa", head, tok, {})
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


@pytest.mark.parametrize("names", [None, ["a"], ["a", "a"], ["a", " "]])
def test_an_export_whose_labels_cannot_be_named_is_one_line_before_any_work(tmp_path, tiny_llama_folder, names):
    tok = model.load_tokenizer(str(tiny_llama_folder))
    with pytest.raises(model.ExportError, match="an export needs one distinct, non-empty name per label; pass "
                                                "--label-names") as e:
        model.export(tmp_path / "out", str(tiny_llama_folder), "cls", model.cls_head(32, 2), tok, {}, names)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()
    import flags
    assert model.ExportError in flags.USER_ERRORS  # a script says it in one line, exit code 2
