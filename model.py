"""The Llama backbone, the task heads, pooling, parameter counts and transformers exports."""
import functools
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import torch
from huggingface_hub import constants, get_session, try_to_load_from_cache
from safetensors import SafetensorError
from torch import nn
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, LlamaForQuestionAnswering,
                          LlamaForSequenceClassification)

import lora
import smollm2
from files import os_error, write_error

DEFAULT_MODEL = "meta-llama/Llama-3.2-1B"
EXPORT_DTYPE = torch.float32


def resolve_model(name: str) -> str:
    """A Hub id or local folder as given; the embedded short name maps to its converted cache folder."""
    return str(smollm2.local_folder()) if name == smollm2.NAME else name


def pick_device(device: str = "auto") -> torch.device:
    """'auto': this process's GPU (torchrun's LOCAL_RANK picks which), else the CPU."""
    if device == "auto":
        device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}  # --dtype's names


def dtype_name(dtype: torch.dtype) -> str:
    """--dtype's name of a compute dtype: what an export records of its run (not "auto", which another machine
    would resolve otherwise)."""
    return {t: name for name, t in DTYPES.items()}[dtype]


def pick_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype:
    """bf16 where the hardware runs it fast (CUDA with bf16, CPUs with AVX512-BF16/AMX), else fp16/fp32."""
    if dtype != "auto":
        return DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32


def load_tokenizer(path: str):
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.is_fast:
        raise ValueError(f"{path}: a fast tokenizer is needed (character offsets); install `tokenizers>=0.22`")
    if tokenizer.pad_token_id is None:
        # Llama 3 ships no pad token. Pooling reads the attention mask, so any id works; prefer the
        # reserved fine-tune pad token so exported models can tell padding from text.
        pad = "<|finetune_right_pad_id|>"
        tokenizer.pad_token = pad if pad in tokenizer.get_vocab() else tokenizer.eos_token
    return tokenizer


class ModelError(ValueError):
    """--model names nothing loadable: a missing folder, a corrupt config, truncated weights, a Hub id offline."""


def first_line(e: Exception, limit: int) -> str:
    """What an exception says, as one short line for a one-line error."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


@functools.cache
def hub_unreachable() -> str | None:
    """Why the Hub cannot be reached (no network, HF_HUB_OFFLINE=1), from one quick request without retries; None
    when it answers at all. Asked once per process."""
    try:
        get_session().head(constants.ENDPOINT, timeout=5)
    except Exception as e:  # whatever the HTTP library (requests, httpx) raises: no answer
        return first_line(e, 200)
    return None


def load_path(name: str) -> str:
    """Where from_pretrained reads the model `name` (resolve_model: what identifies it). A Hub id while the Hub is
    unreachable reads from its snapshot in the local Hub cache, at once: huggingface_hub would retry every file for
    ~25 s, minutes per model, before falling back to it."""
    path = resolve_model(name)
    if Path(path).is_dir() or (why := hub_unreachable()) is None:
        return path
    try:
        config = try_to_load_from_cache(path, "config.json")
    except ValueError:  # not a Hub id: from_pretrained says what is wrong with it
        return path
    if not isinstance(config, str):
        raise ModelError(f"--model {name}: not in the local Hugging Face cache, and the Hub is unreachable ({why}); "
                         "download it where there is a network (`hf download ID`), or pass a local folder or "
                         "smollm2-135m (embedded)")
    return str(Path(config).parent)


@contextmanager
def loading(name: str):
    """Turn the ways a model fails to load into one ModelError that says what to pass instead; yields where to load
    it from (load_path)."""
    if name.startswith(("/", "./", "../", "~")) and not Path(name).expanduser().is_dir():
        raise ModelError(f"--model {name}: no such folder; pass a folder with config.json, weights and tokenizer "
                         "files, a Hub id (org/name), or smollm2-135m (embedded)")
    path = load_path(name)
    try:
        yield path
    except (OSError, ValueError, SafetensorError) as e:
        raise ModelError(f"--model {name}: cannot load it ({first_line(e, 300)}); pass a folder with config.json, "
                         "weights and tokenizer files, a Hub id you can reach, or smollm2-135m (embedded)") from None


def load_backbone(name: str, device: torch.device, dtype: torch.dtype, tokenizer=None):
    """(causal LM, tokenizer): frozen, eval mode. Its `.model` is the backbone; its LM head serves zero-shot. A
    tokenizer the caller already loaded (load_tokenizer) is used, not loaded again."""
    with loading(name) as path:
        tokenizer = load_tokenizer(path) if tokenizer is None else tokenizer
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    lm.config.pad_token_id = tokenizer.pad_token_id
    lm.requires_grad_(False).eval().to(device)
    if device.type == "cuda":
        skip_cudnn_attention()
    return lm, tokenizer


def skip_cudnn_attention() -> None:
    """Keep SDPA off its cuDNN kernel (process-wide): cuDNN builds a plan for every new (batch, length) shape,
    about 3 ms of host time per attention call (profiled on an H200, torch 2.11), and length-sorted batches have
    many shapes, so the GPU starved. PyTorch's own flash kernel has no such cost."""
    torch.backends.cuda.enable_cudnn_sdp(False)


def run_blocks(backbone, hidden: torch.Tensor, blocks) -> torch.Tensor:
    """Decoder `blocks` (a slice of backbone.layers) on right-padded (B, T, H) states: causal, so no mask."""
    positions = torch.arange(hidden.shape[1], device=hidden.device)[None]
    rotary = backbone.rotary_emb(hidden, positions)
    for block in blocks:
        out = block(hidden, position_embeddings=rotary, position_ids=positions)
        hidden = out[0] if isinstance(out, tuple) else out  # transformers < 5 returns a tuple
    return hidden


class Trunk(nn.Module):
    """The backbone below its last k blocks, called as the backbone is (input_ids -> .last_hidden_state): the
    states entering the top k, which --unfreeze-last k caches, since nothing below them trains."""

    def __init__(self, backbone, k: int):
        super().__init__()
        self.backbone, self.k = backbone, k

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        blocks = self.backbone.layers[:len(self.backbone.layers) - self.k]
        return SimpleNamespace(last_hidden_state=run_blocks(self.backbone, self.backbone.embed_tokens(input_ids),
                                                            blocks))


def top(backbone, hidden: torch.Tensor, k: int) -> torch.Tensor:
    """The last k blocks and the final norm on Trunk states: together, the whole backbone's output."""
    hidden = hidden.to(backbone.norm.weight.dtype)  # the trained top runs in fp32
    return backbone.norm(run_blocks(backbone, hidden, backbone.layers[len(backbone.layers) - k:]))


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str = "last") -> torch.Tensor:
    """(B, T, H) -> (B, H): the last attended token (works for either padding side), or the masked mean."""
    if how == "last":
        last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1)
    raise ValueError(f"unknown pooling {how!r}; use 'last' or 'mean'")


def cls_head(hidden_size: int, num_labels: int, init_std: float = 0.02) -> nn.Linear:
    """Exactly LlamaForSequenceClassification's `score`: no bias, N(0, 0.02)."""
    head = nn.Linear(hidden_size, num_labels, bias=False)
    nn.init.normal_(head.weight, std=init_std)
    return head


def qa_head(hidden_size: int, init_std: float = 0.02) -> nn.Linear:
    """Exactly LlamaForQuestionAnswering's `qa_outputs`: start/end logits, with bias."""
    head = nn.Linear(hidden_size, 2)
    nn.init.normal_(head.weight, std=init_std)
    nn.init.zeros_(head.bias)
    return head


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def meta_backbone(name: str) -> nn.Module:
    """The bare LlamaModel from its config alone, on the meta device (exact shapes, no weights read); frozen, as
    load_backbone's."""
    with loading(name) as path, torch.device("meta"):
        return AutoModel.from_config(AutoConfig.from_pretrained(path)).requires_grad_(False)


def param_report(backbone: nn.Module, head: nn.Module) -> dict:
    """Parameters of the base backbone, the LoRA adapters (when there are any) and the head, and how many of them
    train (requires_grad): the head alone, or with the adapters or the unfrozen blocks."""
    adapters = sum(p.numel() for n, p in backbone.named_parameters() if lora.is_adapter(n))
    parts = {"backbone": n_params(backbone) - adapters, **({"adapters": adapters} if adapters else {}),
             "head": n_params(head)}
    trainable = sum(p.numel() for m in (backbone, head) for p in m.parameters() if p.requires_grad)
    return {**parts, "total": sum(parts.values()), "trainable": trainable}


SETTINGS_FILE = "llama_heads.json"  # in an export: what predict.py needs besides the weights (task, inputs, threshold)


class ExportError(ValueError):
    """What a run would export cannot be read as the run reads it (labels without names)."""


def label_maps(names, n_labels: int) -> tuple[dict[int, str], dict[str, int]]:
    """(id2label, label2id) of a classification head: one distinct, non-empty name per output, or ExportError."""
    names = list(names or [])
    if len(names) != n_labels or not all(isinstance(n, str) and n.strip() for n in names) \
            or len(set(names)) != len(names):
        raise ExportError(f"cannot name the labels of a {n_labels}-label head with {names!r}: an export needs one "
                          "distinct, non-empty name per label; pass --label-names NAME,NAME,... in label order")
    return dict(enumerate(names)), {n: i for i, n in enumerate(names)}


def rope_keys(config: dict) -> dict:
    """The rope settings in both layouts: 5.x reads `rope_parameters` (and writes nothing else), 4.x reads
    `rope_theta` and `rope_scaling` (Llama 3's rope_type llama3 included) and silently falls back to theta 10000
    without them. Either layout in, both out, the same values."""
    params = config.get("rope_parameters")
    if params:
        theta = params["rope_theta"]
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
        if scaling.get("rope_type", scaling.get("type", "default")) == "default":
            scaling = None
    else:
        theta, scaling = config.get("rope_theta", 10000.0), config.get("rope_scaling")
        params = {"rope_theta": theta, **(scaling or {"rope_type": "default"})}
    return {"rope_theta": theta, "rope_scaling": scaling, "rope_parameters": params}


def make_portable(folder: Path, max_length: int | None) -> None:
    """Rewrite what this transformers version saved so that 4.x (from the declared lower bound) and 5.x load the
    folder alike: the tokenizer class both have (5.x writes TokenizersBackend, unknown to 4.x), the run's max
    length (so `truncation=True` cuts where the run cut; save_pretrained writes 1e30), the rope settings in both
    layouts (rope_keys)."""
    path = folder / "tokenizer_config.json"
    tok = json.loads(path.read_text(encoding="utf-8"))
    tok["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("is_local", "local_files_only"):  # 5.x notes how this copy was loaded: no setting of the tokenizer
        tok.pop(key, None)
    if max_length:
        tok["model_max_length"] = max_length
    path.write_text(json.dumps(tok, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    path = folder / "config.json"
    if path.exists():  # a --peft export has none: the base model's is read
        config = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps({**config, **rope_keys(config)}, indent=2) + "\n", encoding="utf-8")


def export(out_dir: Path, model_name: str, task: str, head: nn.Linear, tokenizer, settings: dict,
           id2label=None, backbone: nn.Module | None = None, adapter: tuple[dict, dict] | None = None) -> Path:
    """Write a transformers checkpoint (config + safetensors + tokenizer) with the trained head, on the base
    checkpoint's backbone with what `backbone` trained written in (LoRA adapters merged, unfrozen blocks); or,
    given `adapter` (Mode.peft), the adapters and head in PEFT's format instead of a merged checkpoint. Either way
    with the tokenizer and `settings` (SETTINGS_FILE: the task, how inputs were encoded, a QA run's threshold),
    written so that transformers 4.x and 5.x read it alike (make_portable). A classification head needs a name per
    label (`id2label`, in the head's order): what pipeline and id2label show.

    task 'cls' -> LlamaForSequenceClassification (pools the rightmost non-pad token: our 'last' pooling);
    task 'qa'  -> LlamaForQuestionAnswering, whose backbone attribute is `transformer`, not `model`:
    we fill it explicitly, since from_pretrained on a plain Llama checkpoint would leave it random.

    The export is fp32 (EXPORT_DTYPE, recorded in its config): the head, unfrozen blocks and LoRA updates trained
    in fp32, and rounding them to a bf16 checkpoint's dtype would lose most of their small updates.
    """
    out_dir = Path(out_dir)
    if task == "cls":  # before any work: names a client can show
        label_maps(id2label, head.out_features)
    tmp = out_dir.with_name(out_dir.name + f".{os.getpid()}.tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if adapter is not None:
            lora.write_peft(tmp, adapter)
        else:
            full_model(model_name, task, head, tokenizer.pad_token_id, id2label, backbone).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        make_portable(tmp, settings.get("max_length"))
        (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=1))
        mode = (tmp / SETTINGS_FILE).stat().st_mode  # a plain open()'s; newer safetensors write weights 0600
        for f in tmp.iterdir():
            f.chmod(mode)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except (OSError, SafetensorError) as e:  # no space, read-only: one line, and no half-written export left
        shutil.rmtree(tmp, ignore_errors=True)
        if (failed := os_error(e)) is None:
            raise
        raise write_error(failed, out_dir) from None
    return out_dir


def full_model(model_name: str, task: str, head: nn.Linear, pad_token_id: int, id2label=None,
               backbone: nn.Module | None = None) -> nn.Module:
    """The base checkpoint as LlamaFor{SequenceClassification,QuestionAnswering} in EXPORT_DTYPE, with `head` and
    what `backbone` trained."""
    with loading(model_name) as path:
        base = AutoModel.from_pretrained(path, dtype=EXPORT_DTYPE)
    if backbone is not None:
        merge_into(base, backbone)
    config = base.config
    config.pad_token_id = pad_token_id
    if task == "cls":
        config.num_labels = head.out_features
        config.id2label, config.label2id = label_maps(id2label, head.out_features)
        cls = LlamaForSequenceClassification
    else:
        cls = LlamaForQuestionAnswering
    with torch.device("meta"):
        full = cls(config)
    full.base_model.load_state_dict(base.state_dict(), assign=True)
    setattr(full, "score" if task == "cls" else "qa_outputs", head.to("cpu", EXPORT_DTYPE))
    return full.eval()


@torch.no_grad()
def merge_into(base: nn.Module, trained: nn.Module) -> None:
    """Write what `trained` learned into `base`, the same model fresh from its checkpoint: W + (alpha/r) B A for
    each adapter (summed in fp32) and every other trained parameter as it is."""
    for name, m in trained.named_modules():
        if isinstance(m, lora.LoRALinear):
            w = base.get_submodule(name).weight
            w.copy_(w.float() + m.delta().to(w.device))
    for name, p in trained.named_parameters():
        if p.requires_grad and not lora.is_adapter(name):
            base.get_parameter(name).copy_(p)
