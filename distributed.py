"""torchrun support: every rank runs the same script on the same data; work is split by rank, and only rank 0
prints and writes files. Without torchrun (no RANK in the environment) this is one process of world size 1."""
import atexit
import os
import sys

import torch
import torch.distributed as dist
from tqdm import tqdm


# The process group's backends by the rank's device. NCCL takes CUDA tensors only, and some collectives carry CPU
# tensors (all_ranks' flag, gather_objects and gather_tensors, from_main's checkpoint; torch sends objects through
# the CPU backend when the group has one): a GPU group has gloo beside NCCL for them.
BACKENDS = {"cuda": "cpu:gloo,cuda:nccl", "cpu": "gloo"}


def setup(device: torch.device) -> None:
    """Join the process group under torchrun (BACKENDS). A no-op otherwise."""
    if "RANK" not in os.environ or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(BACKENDS.get(device.type, "gloo"))
    atexit.register(dist.destroy_process_group)
    if dist.get_rank() != 0:
        sys.stdout = open(os.devnull, "w")


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def all_reduce(tensor: torch.Tensor) -> None:
    """Sum over the ranks, in place."""
    if world() > 1:
        dist.all_reduce(tensor)


def local_rank() -> int:
    """This process's rank on its own machine (torchrun's LOCAL_RANK): local rank 0 writes the machine's caches."""
    return int(os.environ.get("LOCAL_RANK", 0)) if world() > 1 else 0


def all_ranks(flag: bool) -> bool:
    """True where every rank says True (one answer for all, so no rank takes a path the others skip)."""
    if world() == 1:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def gather_objects(obj) -> list:
    """Every rank's (small, picklable) obj, on every rank."""
    if world() == 1:
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def gather_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's CPU tensor (any shape and dtype), on every rank: its bytes travel in one all_gather (on the
    group's CPU backend), padded to the largest rank's, and what is returned are views of the received buffers.
    Ranks on machines without a shared disk get each other's work this way. An exchange costs each rank ~2.5 times
    a chunk's features while it lasts, against ~3.2 when the tensors were pickled (bench/dist_memory.py)."""
    if world() == 1:
        return [tensor]
    raw = tensor.contiguous().reshape(-1).view(torch.uint8)
    shapes = gather_objects((raw.numel(), tensor.dtype, tuple(tensor.shape)))
    size = max(n for n, _, _ in shapes)
    mine = torch.zeros(size, dtype=torch.uint8)
    mine[:raw.numel()] = raw
    received = torch.empty(size * len(shapes), dtype=torch.uint8)  # one buffer: a list would be copied out of one
    dist.all_gather_into_tensor(received, mine)
    return [buf[:n].view(dtype).view(shape) for buf, (n, dtype, shape) in zip(received.split(size), shapes)]


def from_main(load):
    """load() on rank 0, its result on every rank (a checkpoint that only rank 0's machine holds)."""
    if world() == 1:
        return load()
    box = [load() if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def progress(*args, **kwargs) -> tqdm:
    """tqdm on rank 0; the other ranks' bars would only repeat it."""
    return tqdm(*args, **kwargs) if is_main() else tqdm(*args, disable=True, **kwargs)
