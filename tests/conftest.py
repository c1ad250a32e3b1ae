"""Shared fixtures: the real embedded SmolLM2 (converted once into the cache) and a tiny random Llama."""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    import smollm2
    return smollm2.local_folder()


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_folder):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(smollm2_folder)


@pytest.fixture(scope="session")
def tiny_llama_folder(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A random 2-layer Llama with SmolLM2's tokenizer, saved like any Hub checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(smollm2_tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, pad_token_id=smollm2_tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_bf16_folder(tmp_path_factory, tiny_llama_folder) -> Path:
    """The tiny Llama saved in bfloat16, as Llama 3.2 ships: exports must not round what trained in fp32 to it."""
    from transformers import LlamaForCausalLM
    folder = tmp_path_factory.mktemp("tiny-llama-bf16")
    LlamaForCausalLM.from_pretrained(tiny_llama_folder, dtype=torch.bfloat16).save_pretrained(folder)
    for f in tiny_llama_folder.iterdir():
        if "token" in f.name or f.name.endswith(".jinja"):
            (folder / f.name).write_bytes(f.read_bytes())
    return folder


@pytest.fixture
def mounts():
    """helpers.Mounts, unmounted when the test ends."""
    from helpers import Mounts
    made = Mounts()
    yield made
    made.undo()
