"""Run a script as a torchrun rank whose process group has NCCL's device constraint, simulated on CPUs: the group
is what distributed.setup joins on a GPU, with gloo standing in for NCCL on the same CUDA-only device map (gloo
then refuses a CPU tensor exactly as NCCL does: "No backend type associated with device type cpu").

    python -m torch.distributed.run --nproc_per_node 2 tests/nccl_ranks.py train_cls.py FLAGS..."""
import atexit
import os
import runpy
import sys
from unittest import mock

import torch
import torch.distributed as dist

script, sys.argv = sys.argv[1], sys.argv[1:]
sys.path[0] = os.path.dirname(os.path.abspath(script))
import distributed  # noqa: E402  (the script's own module, found beside it)

asked = []
with mock.patch.object(dist, "init_process_group", lambda backend=None, **kw: asked.append(backend)), \
        mock.patch.object(torch.cuda, "set_device", lambda device: None), \
        mock.patch.object(dist, "get_rank", lambda group=None: 0), mock.patch.object(atexit, "register"):
    distributed.setup(torch.device("cuda", 0))  # what would a GPU rank join?
spec = ",".join(part if ":" in part else f"cuda:{part}" for part in asked[0].split(","))  # "nccl": CUDA alone
dist.init_process_group(spec.replace("nccl", "gloo"))
atexit.register(dist.destroy_process_group)
if dist.get_rank() != 0:
    sys.stdout = open(os.devnull, "w")
runpy.run_path(script, run_name="__main__")
