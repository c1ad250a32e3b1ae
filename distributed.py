"""torchrun support: every rank runs the same script on the same data; work is split by rank, and only rank 0
prints and writes files. Without torchrun (no RANK in the environment) this is one process of world size 1."""
import atexit
import os
import sys

import torch
import torch.distributed as dist
from tqdm import tqdm


def setup(device: torch.device) -> None:
    """Join the process group under torchrun: NCCL for GPUs, gloo for CPUs. A no-op otherwise."""
    if "RANK" not in os.environ or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
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


def gather_shares(idx: list[int], items: list) -> list[tuple[list[int], list]]:
    """Every rank's (indices, items) share, on every rank: exchanged through the process group, so ranks on
    machines without a shared disk get each other's work."""
    if world() == 1:
        return [(idx, items)]
    shares = [None] * world()
    dist.all_gather_object(shares, (idx, items))
    return shares


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
