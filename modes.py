"""What trains, chosen once from the flags, as one object the scripts carry from there on.

    Mode        the head alone, on features of the frozen backbone cached on disk (the default, and the base class)
    TopBlocks   the top K decoder blocks, the final norm and the head; the states entering the top K are cached
                (nothing below them trains), and each step runs only the top
    LoRA        low-rank adapters on chosen Linear layers and the head; adapters change every block, so each
                step runs the whole backbone

A mode knows what it trains (prepare), where a batch's features come from (source), whether AMP applies, and
what to save and reload. A fourth mode is one more class here and one more flag in flags.py.
"""
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import lora
from batching import length_batches, pad_batch, pad_rows
from features import Pick, backbone_features, cache_path, cached_features, compile_pays, feature_module
from model import Trunk, meta_backbone, param_report, top


class TuningError(ValueError):
    """A mode that does not fit the model (--unfreeze-last beyond its depth, unknown --lora-targets) or a file of
    trained weights that does not fit the mode."""


@dataclass
class Passes:
    """How feature passes run: the model's path (it keys the cache), tokens per batch, torch.compile (True, False,
    or None: where it pays, by the split's token count), and whether frozen features are kept on disk for later runs
    (not for predict.py's one-off inputs)."""
    model_path: str
    max_tokens: int
    compile: bool | None = None
    keep: bool = True

    def compiles(self, seqs: list[list[int]], device: torch.device) -> bool:
        if self.compile is not None:
            return self.compile
        tokens = sum(map(len, seqs))
        if pays := compile_pays(tokens, device):
            print(f"{tokens:,} tokens: the feature pass is compiled where it has to run (--compile off: never)")
        return pays

    def cache_path(self, dtype: torch.dtype, seqs: list[list[int]], **key) -> Path | None:
        return cache_path(self.model_path, dtype, seqs, **key) if self.keep else None


class Source:
    """One split's features as the head reads them, for any list of its item indices: `(B, H)` for fixed-size
    items (pooled vectors), a list of `(n_i, H)` for ragged ones (a window's rows). `stored`: read from memory,
    no backbone work per batch, so batches need not be length-sorted."""

    def __init__(self, get: Callable[[list[int]], list[torch.Tensor]], dense: bool, stored: bool):
        self._get, self.dense, self.stored = get, dense, stored

    @classmethod
    def in_memory(cls, items: list[torch.Tensor], dense: bool, device) -> "Source":
        if dense:
            table = torch.stack(items).to(device)
            return cls(lambda idx: table[idx], dense, stored=True)
        return cls(lambda idx: [items[i] for i in idx], dense, stored=True)

    def __call__(self, idx) -> torch.Tensor | list[torch.Tensor]:
        got = self._get(idx)
        return torch.stack(list(got)) if self.dense and not torch.is_tensor(got) else got

    @torch.no_grad()
    def all(self, idx: list[int], lengths: list[int], max_tokens: int) -> torch.Tensor:
        """Fixed-size features of many items in one tensor, computed in length-sorted batches."""
        if self.stored:
            return self(idx)
        out = None
        for b in length_batches([lengths[i] for i in idx], max_tokens):
            x = self([idx[j] for j in b])
            out = x.new_empty(len(idx), x.shape[-1]) if out is None else out
            out[b] = x
        return out


@dataclass
class FeatureSpec:
    """What one split's source needs: its token sequences, what to keep of each pass (pick, and its cache key),
    fixed-size or ragged items, and whether a frozen pass may be cached on disk."""
    name: str
    seqs: list[list[int]]
    pad_id: int
    pick: Pick
    key: dict
    dense: bool
    cache: bool = True


class Mode:
    name = "head"
    trains_backbone = False
    # --lr auto, the default: a grid of heads, one per learning rate, on the same batches of the same features (no
    # backbone trains, so each head's run is its own and K heads cost about one; lrgrid.py)
    lr_grid = True
    caches_every_position = False  # the cache holds what the head reads, not the states of every token

    def describe(self) -> str:
        return "the head"

    def prepare(self, backbone: nn.Module) -> None:
        """Make trainable what this mode trains; the backbone stays frozen otherwise. Runs after "before" is
        scored, since preparing changes the backbone (adapters, fp32 blocks)."""

    def cache_note(self, spec: FeatureSpec, keep: bool = True) -> str:
        """How the split's features are had; `keep` false: predict.py's one-off inputs, kept in memory only."""
        stored = "cached on disk" if keep else "computed once, kept in memory only"
        return f"{spec.name}: features " + (stored if spec.cache else "computed by each pass")

    def source(self, lm, spec: FeatureSpec, passes: Passes) -> Source:
        if not spec.cache:
            return full_passes(lm, spec)
        device = next(lm.parameters()).device
        compute = picks(feature_module(lm.model, passes.compiles(spec.seqs, device)), spec, passes,
                        f"features {spec.name}", spec.pick)
        items = cached_features(passes.cache_path(lm.dtype, spec.seqs, **spec.key), spec.seqs, compute)
        return Source.in_memory(items, spec.dense, device)

    def peft(self, backbone: nn.Module, head: nn.Module, task: str, base: str) -> tuple[dict, dict] | None:
        """What this mode trained as a PEFT adapter (config, tensors), if the mode is one PEFT has."""
        return None

    def amp(self, device: torch.device) -> bool:
        """Autocast a training backbone on CUDA; a head on cached features is a few small fp32 matmuls, where
        autocast would only add casts (and round the features)."""
        return device.type == "cuda" and self.trains_backbone



class TopBlocks(Mode):
    name = "top"
    trains_backbone = True
    # no grid: the blocks below K heads would learn from all of them, so no head would be the run its rate makes
    # alone; and each head's validation would run the top blocks again
    lr_grid = False
    caches_every_position = True  # the top blocks attend to every earlier token

    def __init__(self, k: int, grad_checkpoint: bool = False):
        self.k, self.grad_checkpoint = k, grad_checkpoint

    def describe(self) -> str:
        return f"the last {self.k} decoder blocks, the final norm and the head"

    def prepare(self, backbone: nn.Module) -> None:
        """The top k blocks and the final norm train in fp32: AdamW's small steps vanish in bf16 weights."""
        if self.k > len(backbone.layers):
            raise TuningError(f"--unfreeze-last {self.k}: the model has {len(backbone.layers)} decoder blocks")
        for m in (*backbone.layers[-self.k:], backbone.norm):
            m.float().requires_grad_(True)
        # the frozen blocks below hand over compute-dtype activations; CUDA autocast still runs the matmuls in bf16
        backbone.layers[-self.k].register_forward_pre_hook(lambda module, args: (args[0].float(), *args[1:]))
        training_passes(backbone, self.grad_checkpoint)

    def cache_note(self, spec: FeatureSpec, keep: bool = True) -> str:
        what = f"the states below the top {self.k} blocks, which every step and evaluation runs"
        stored = "cached on disk" if keep else "kept in memory only"
        return f"{spec.name}: " + (f"{stored}: {what}" if spec.cache else "computed by each pass")

    def source(self, lm, spec: FeatureSpec, passes: Passes) -> Source:
        if not spec.cache:
            return full_passes(lm, spec)
        if self.k > len(lm.model.layers):
            raise TuningError(f"--unfreeze-last {self.k}: the model has {len(lm.model.layers)} decoder blocks")
        depth = len(lm.model.layers) - self.k
        compute = picks(Trunk(lm.model, self.k), spec, passes, f"trunk {spec.name}",
                        lambda b, hidden, _: [hidden[r, :len(spec.seqs[i])] for r, i in enumerate(b)])
        states = cached_features(passes.cache_path(lm.dtype, spec.seqs, trunk=depth), spec.seqs, compute)
        device = next(lm.parameters()).device

        def get(idx):  # grad mode is the caller's: the loss reaches the top blocks
            x, mask = pad_rows([states[i] for i in idx], device)
            return spec.pick(idx, top(lm.model, x, self.k), mask)
        return Source(get, spec.dense, stored=False)


class LoRA(Mode):
    name = "lora"
    trains_backbone = True
    lr_grid = False  # as TopBlocks

    def __init__(self, rank: int, alpha: float, dropout: float, targets: list[str], grad_checkpoint: bool = False):
        self.rank, self.alpha, self.dropout, self.targets = rank, alpha, dropout, targets
        self.grad_checkpoint = grad_checkpoint

    def describe(self) -> str:
        return f"LoRA adapters (r={self.rank}, alpha={self.alpha:g}) on {','.join(self.targets)} and the head"

    def prepare(self, backbone: nn.Module) -> None:
        try:
            lora.add_adapters(backbone, self.rank, self.alpha, self.dropout, self.targets)
        except lora.UnknownTargets as e:
            raise TuningError(f"--lora-targets: {e}") from None
        backbone.eval()  # new modules start in training mode (dropout on); fit switches modes itself
        training_passes(backbone, self.grad_checkpoint)

    def cache_note(self, spec: FeatureSpec, keep: bool = True) -> str:
        return f"{spec.name}: feature cache off: LoRA adapts every block, so every step and evaluation runs the " \
               "backbone"

    def source(self, lm, spec: FeatureSpec, passes: Passes) -> Source:
        return full_passes(lm, spec)

    def peft(self, backbone: nn.Module, head: nn.Module, task: str, base: str) -> tuple[dict, dict]:
        return lora.to_peft(trained_parameters(backbone, head), task, self.rank, self.alpha, self.dropout,
                            self.targets, base)


def training_passes(backbone: nn.Module, grad_checkpoint: bool) -> None:
    backbone.config.use_cache = False  # training passes keep no KV cache
    if grad_checkpoint:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def picks(module, spec: FeatureSpec, passes: Passes, desc: str, pick: Pick):
    """cached_features' compute: `module`'s passes over a chunk of the split, kept by `pick`."""
    def compute(idx):
        for batch, feats in backbone_features(module, [spec.seqs[i] for i in idx], spec.pad_id, passes.max_tokens,
                                              desc, lambda b, hidden, mask: pick([idx[i] for i in b], hidden, mask)):
            yield [idx[i] for i in batch], feats
    return compute


def full_passes(lm, spec: FeatureSpec) -> Source:
    """Features from a whole backbone pass per batch (right-padded and causal: no mask needed)."""
    device = next(lm.parameters()).device

    def get(idx):  # grad mode is the caller's: the loss reaches what trains in the backbone
        ids, mask = pad_batch([spec.seqs[i] for i in idx], spec.pad_id, device)
        return spec.pick(idx, lm.model(input_ids=ids).last_hidden_state, mask)
    return Source(get, spec.dense, stored=False)


def trained_parameters(backbone: nn.Module, head: nn.Module) -> dict[str, nn.Parameter]:
    """What trains, keyed by module path ("head.weight", "backbone.layers.1.mlp..."): fit's and the files' keys."""
    return {n: p for n, p in nn.ModuleDict({"backbone": backbone, "head": head}).named_parameters()
            if p.requires_grad}


def check_same(saved: dict[str, torch.Tensor], params: dict[str, torch.Tensor], source) -> None:
    """Refuse saved weights (a checkpoint, adapters.safetensors) of other names or shapes than what trains."""
    if {n: tuple(t.shape) for n, t in saved.items()} != {n: tuple(p.shape) for n, p in params.items()}:
        raise TuningError(f"{source} holds other parameters than these flags train; use the run's own "
                          "--lora-*/--unfreeze-last flags (or start afresh with --overwrite)")


@torch.no_grad()
def load_trained(backbone: nn.Module, head: nn.Module, state: dict[str, torch.Tensor], source) -> None:
    """A run's trained weights (RunDir.load_trained) back into a backbone prepared by the run's own mode."""
    params = trained_parameters(backbone, head)
    check_same(state, params, source)
    for n, t in state.items():
        params[n].copy_(t)


def count_params(model_name: str, mode: Mode, make_head: Callable[[int], nn.Module]) -> int:
    """--count-params-only: the parameter analysis of a mode from the model's config alone (meta device)."""
    backbone = meta_backbone(model_name)
    mode.prepare(backbone)
    print(json.dumps(param_report(backbone, make_head(backbone.config.hidden_size)), indent=1))
    return 0
