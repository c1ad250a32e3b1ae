"""Low-rank adapters (LoRA, Hu et al. 2021) on chosen Linear layers, in plain PyTorch.

y = W x + (alpha/r) B A dropout(x), with W frozen (in the compute dtype) and A (r x in), B (out x r) trained in
fp32. B starts at zero, so training starts from the base model exactly; merging folds (alpha/r) B A into W,
giving a plain checkpoint with the same outputs.
"""
import json
from pathlib import Path

import torch
from torch import nn

from files import write_atomic, write_safetensors


class UnknownTargets(ValueError):
    """--lora-targets names a layer the model does not have."""


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float):
        super().__init__()
        self.base, self.scale, self.dropout = base, alpha / rank, nn.Dropout(dropout)
        # fp32 whatever the base's dtype; A keeps nn.Linear's kaiming-uniform init, B starts at zero
        self.lora_a = nn.Linear(base.in_features, rank, bias=False, device=base.weight.device, dtype=torch.float32)
        self.lora_b = nn.Linear(rank, base.out_features, bias=False, device=base.weight.device, dtype=torch.float32)
        nn.init.zeros_(self.lora_b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        update = self.lora_b(self.lora_a(self.dropout(x.to(self.lora_a.weight.dtype))))
        return out + (self.scale * update).to(out.dtype)

    def delta(self) -> torch.Tensor:
        """(alpha/r) B A: what merging adds to W."""
        return self.scale * (self.lora_b.weight @ self.lora_a.weight)


def is_adapter(name: str) -> bool:
    return ".lora_a." in name or ".lora_b." in name


def add_adapters(backbone: nn.Module, rank: int, alpha: float, dropout: float, targets: list[str]) -> None:
    """Wrap every nn.Linear whose attribute name is in targets (q_proj, k_proj, ..., down_proj) with an adapter."""
    linear = [(name, m) for name, m in backbone.named_modules() if isinstance(m, nn.Linear)]
    found = [(name, m) for name, m in linear if name.rpartition(".")[2] in targets]
    missing = set(targets) - {name.rpartition(".")[2] for name, _ in found}
    if missing:
        known = sorted({name.rpartition(".")[2] for name, _ in linear})
        raise UnknownTargets(f"no Linear layer named {', '.join(sorted(missing))}; this model has {','.join(known)}")
    for name, m in found:
        parent, _, child = name.rpartition(".")
        setattr(backbone.get_submodule(parent), child, LoRALinear(m, rank, alpha, dropout))


# PEFT's layout of the same adapters, per task: (backbone attribute, head attribute, PEFT task type). Keys there are
# "base_model.model.<backbone>.<path>.lora_A.weight" and, for the head (PEFT's modules_to_save), "base_model.model.<head>.*".
PEFT_LAYOUT = {"cls": ("model", "score", "SEQ_CLS"), "qa": ("transformer", "qa_outputs", "QUESTION_ANS")}
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _peft_key(key: str, task: str) -> str:
    backbone, head, _ = PEFT_LAYOUT[task]
    part, _, rest = key.partition(".")
    rest = rest.replace(".lora_a.", ".lora_A.").replace(".lora_b.", ".lora_B.")
    return f"base_model.model.{backbone if part == 'backbone' else head}.{rest}"


def to_peft(trained: dict[str, torch.Tensor], task: str, rank: int, alpha: float, dropout: float,
            targets: list[str], base: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter_config.json, adapter_model.safetensors) for `trained` (modes.trained_parameters: "backbone.<path>"
    adapters and "head.*"), so PeftModel.from_pretrained(AutoModelFor<task>(base), folder) computes what we do."""
    unknown = [k for k in trained if not (k.startswith("head.") or is_adapter(k))]
    if unknown:
        raise ValueError(f"not LoRA adapters or the head, so not in PEFT's format: {unknown[:3]}")
    config = {"peft_type": "LORA", "task_type": PEFT_LAYOUT[task][2], "base_model_name_or_path": base, "r": rank,
              "lora_alpha": alpha, "lora_dropout": dropout, "target_modules": sorted(targets), "bias": "none",
              "modules_to_save": [PEFT_LAYOUT[task][1]], "fan_in_fan_out": False, "inference_mode": True}
    return config, {_peft_key(k, task): t.detach().cpu().contiguous() for k, t in trained.items()}


def from_peft(tensors: dict[str, torch.Tensor], task: str) -> dict[str, torch.Tensor]:
    """adapter_model.safetensors' tensors under trained_parameters' keys (to_peft's inverse)."""
    backbone, head, _ = PEFT_LAYOUT[task]
    out = {}
    for key, t in tensors.items():
        for ours, theirs in (("backbone", backbone), ("head", head)):
            if key.startswith(prefix := f"base_model.model.{theirs}."):
                rest = key[len(prefix):].replace(".lora_A.", ".lora_a.").replace(".lora_B.", ".lora_b.")
                out[f"{ours}.{rest}"] = t
                break
        else:
            raise ValueError(f"{key}: not a key of this project's {task} adapters in PEFT's format")
    return out


def write_peft(folder: Path, adapter: tuple[dict, dict[str, torch.Tensor]]) -> None:
    config, tensors = adapter
    write_atomic(Path(folder) / PEFT_FILES[0], json.dumps(config, indent=1))
    write_safetensors(Path(folder) / PEFT_FILES[1], tensors, metadata={"format": "pt"})  # as PEFT writes it
