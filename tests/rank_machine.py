"""Run a script as a torchrun rank on a machine of its own would: its own disk cache (LLAMA_HEADS_CACHE/rank<R>)
and local rank 0 on its node. Two such ranks are two machines without a shared filesystem, simulated on one.

    python -m torch.distributed.run --nproc_per_node 2 tests/rank_machine.py train_cls.py FLAGS..."""
import os
import runpy
import sys

os.environ["LLAMA_HEADS_CACHE"] = os.path.join(os.environ["LLAMA_HEADS_CACHE"], f"rank{os.environ['RANK']}")
os.environ["LOCAL_RANK"] = "0"
script, sys.argv = sys.argv[1], sys.argv[1:]
sys.path[0] = os.path.dirname(os.path.abspath(script))
runpy.run_path(script, run_name="__main__")
