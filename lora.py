"""What trains besides the head: low-rank adapters (LoRA) on chosen Linear layers, or the top decoder blocks.

LoRA (Hu et al. 2021): y = W x + (alpha/r) B A dropout(x), with W frozen (in the compute dtype) and A (r x in),
B (out x r) trained in fp32. B starts at zero, so training starts from the base model exactly; merging folds
(alpha/r) B A into W, giving a plain checkpoint with the same outputs.
"""
import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn


class TuningError(ValueError):
    """Flags that do not fit the model: unknown --lora-targets, --unfreeze-last beyond its depth, a mismatched file."""


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


def trains_backbone(args: argparse.Namespace) -> bool:
    return bool(args.lora_rank or args.unfreeze_last)


def add_adapters(backbone: nn.Module, rank: int, alpha: float, dropout: float, targets: list[str]) -> None:
    """Wrap every nn.Linear whose attribute name is in targets (q_proj, k_proj, ..., down_proj) with an adapter."""
    linear = [(name, m) for name, m in backbone.named_modules() if isinstance(m, nn.Linear)]
    found = [(name, m) for name, m in linear if name.rpartition(".")[2] in targets]
    missing = set(targets) - {name.rpartition(".")[2] for name, _ in found}
    if missing:
        known = sorted({name.rpartition(".")[2] for name, _ in linear})
        raise TuningError(f"--lora-targets: no Linear layer named {', '.join(sorted(missing))}; "
                          f"this model has {','.join(known)}")
    for name, m in found:
        parent, _, child = name.rpartition(".")
        setattr(backbone.get_submodule(parent), child, LoRALinear(m, rank, alpha, dropout))


def unfreeze_last(backbone: nn.Module, k: int) -> None:
    """Train the top k decoder blocks and the final norm, in fp32: AdamW's small steps vanish in bf16 weights."""
    if k > len(backbone.layers):
        raise TuningError(f"--unfreeze-last {k}: the model has {len(backbone.layers)} decoder blocks")
    for m in (*backbone.layers[-k:], backbone.norm):
        m.float().requires_grad_(True)
    # the frozen blocks below hand over compute-dtype activations; CUDA autocast still runs the matmuls in bf16
    backbone.layers[-k].register_forward_pre_hook(lambda module, args: (args[0].float(), *args[1:]))


def prepare(backbone: nn.Module, args: argparse.Namespace) -> str:
    """Make the backbone trainable as the flags ask (it stays frozen otherwise); returns what trains, for the log."""
    backbone.requires_grad_(False)
    if args.lora_rank:
        add_adapters(backbone, args.lora_rank, args.lora_alpha, args.lora_dropout, args.lora_targets.split(","))
        backbone.eval()  # new modules start in training mode (dropout on); fit switches modes itself
        what = f"LoRA adapters (r={args.lora_rank}, alpha={args.lora_alpha:g}) on {args.lora_targets} and the head"
    elif args.unfreeze_last:
        unfreeze_last(backbone, args.unfreeze_last)
        what = f"the last {args.unfreeze_last} decoder blocks, the final norm and the head"
    else:
        return "the head"
    backbone.config.use_cache = False  # training passes keep no KV cache
    if args.grad_checkpoint:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return what


def trained_state(backbone: nn.Module, head: nn.Module) -> dict[str, torch.Tensor]:
    """What training changed, keyed by module path: the head and the backbone's trainable parameters."""
    parts = nn.ModuleDict({"backbone": backbone, "head": head})
    return {n: p.detach().cpu().contiguous() for n, p in parts.named_parameters() if p.requires_grad}


def check_same(saved: dict[str, torch.Tensor], params: dict[str, torch.Tensor], source: Path) -> None:
    """Refuse saved weights of other names or shapes than the parameters they are meant for."""
    def shapes(d):
        return {n: tuple(t.shape) for n, t in d.items()}
    if shapes(saved) != shapes(params):
        raise TuningError(f"{source} holds other parameters than these flags train; use the run's own "
                          "--lora-*/--unfreeze-last flags (or, resuming, start afresh without --resume)")


@torch.no_grad()
def load_trained(backbone: nn.Module, head: nn.Module, path: Path) -> None:
    """The inverse of trained_state, into a backbone prepared with the run's flags."""
    params = {n: p for n, p in nn.ModuleDict({"backbone": backbone, "head": head}).named_parameters()
              if p.requires_grad}
    state = load_file(path)
    check_same(state, params, path)
    for n, t in state.items():
        params[n].copy_(t)


@torch.no_grad()
def merge_into(base: nn.Module, trained: nn.Module) -> None:
    """Write what `trained` learned into `base`, the same model fresh from its checkpoint: W + (alpha/r) B A for
    each adapter (summed in fp32, stored in base's dtype) and every other trained parameter as it is."""
    for name, m in trained.named_modules():
        if isinstance(m, LoRALinear):
            w = base.get_submodule(name).weight
            w.copy_(w.float() + m.delta().to(w.device))
    for name, p in trained.named_parameters():
        if p.requires_grad and not is_adapter(name):
            base.get_parameter(name).copy_(p)
