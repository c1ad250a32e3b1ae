"""Low-rank adapters (LoRA, Hu et al. 2021) on chosen Linear layers, in plain PyTorch.

y = W x + (alpha/r) B A dropout(x), with W frozen (in the compute dtype) and A (r x in), B (out x r) trained in
fp32. B starts at zero, so training starts from the base model exactly; merging folds (alpha/r) B A into W,
giving a plain checkpoint with the same outputs.
"""
import torch
from torch import nn


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
