"""--lr auto: K copies of a linear head, one per learning rate on a log grid, trained together on the same batches.

On cached features a head's step is a small matmul, so K heads cost about one: the K weights are stacked and
applied in one batched matmul, each head keeps its own optimizer group (its learning rate), its own gradient
clipping and its own loss, so head k makes the run `--lr GRID[k]` would have made, up to float rounding (the batched
matmul sums in another order; at the high rates, 0.01 and up on the demos, that drifts apart within a few
epochs). The loop keeps the head with the lowest validation loss (loop.head_rank)."""
import contextlib

import torch
import torch.nn.functional as F
from torch import nn

# half-decade steps around the scripts' defaults (5e-3, 2e-3): raw LLM features reward larger steps than those
GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


class HeadGrid(nn.Module):
    """K heads starting from the same weights (`head`'s, so head k equals a one-head run at lrs[k] from the same
    seed). forward gives (K, ..., out): every head's logits; inside only(k), head k's alone, as the plain head
    would, which is how each head is validated."""

    def __init__(self, head: nn.Linear, lrs: tuple[float, ...]):
        super().__init__()
        self.lrs = tuple(lrs)
        self.weight = nn.ParameterList([nn.Parameter(head.weight.detach().clone()) for _ in lrs])
        self.bias = None if head.bias is None else \
            nn.ParameterList([nn.Parameter(head.bias.detach().clone()) for _ in lrs])
        self._only: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._only is not None:
            return F.linear(x, self.weight[self._only], None if self.bias is None else self.bias[self._only])
        out = torch.einsum("...i,koi->k...o", x, torch.stack(list(self.weight)))
        if self.bias is not None:
            out = out + torch.stack(list(self.bias)).view(len(self.lrs), *[1] * (x.dim() - 1), -1)
        return out

    @contextlib.contextmanager
    def only(self, k: int):
        self._only = k
        try:
            yield
        finally:
            self._only = None

    def member(self, k: int) -> nn.Linear:
        """Head k as the plain nn.Linear the run folder, the export and predict.py read."""
        w = self.weight[k]
        head = nn.Linear(w.shape[1], w.shape[0], bias=self.bias is not None).to(w.device)
        with torch.no_grad():
            head.weight.copy_(w)
            if self.bias is not None:
                head.bias.copy_(self.bias[k])
        return head.eval()

    def param_names(self, prefix: str) -> list[list[str]]:
        """Each head's parameter names under `prefix` (the trained_parameters keys)."""
        return [[f"{prefix}weight.{k}"] + ([f"{prefix}bias.{k}"] if self.bias is not None else [])
                for k in range(len(self.lrs))]


def per_head_loss(loss, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """loss(logits, target, reduction="none") averaged over the batch: a scalar for one head's (B, C) logits, a (K,)
    vector, each head's own, for a grid's (K, B, C). Their sum is what the loop backpropagates."""
    if logits.dim() == target.dim() + 1:
        return loss(logits, target)
    k = logits.shape[0]
    return loss(logits.flatten(0, 1), target.repeat(k), reduction="none").view(k, -1).mean(1)
