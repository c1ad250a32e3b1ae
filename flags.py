"""The command line both scripts share: flags, their checks (before any work), the objects built from them
(training mode, loop arguments, feature passes), and the one-line errors a user can cause."""
import argparse
import math
import os
import platform
import random
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import transformers
from torch import nn

import distributed
from data.labelled import DataError
from data.squad import WindowError
from data.squad_json import SquadFormatError
from features import model_fingerprint
from files import DataUnavailable, WriteError, cache_dir
import hub
from hub import Push, PushError, check_repo_id
from loop import TrainArgs, TrainingDiverged
from lrgrid import GRID, HeadGrid
from metrics import MetricsInputError
from model import DEFAULT_MODEL, SETTINGS_FILE, ExportError, ModelError, pick_device, resolve_model
from modes import LoRA, Mode, Passes, TopBlocks, TuningError
from rundir import RunDir, RunError

AUTO = "auto"

# what a user can cause: one line on stderr and exit code 2, never a traceback
USER_ERRORS = (DataError, DataUnavailable, SquadFormatError, WindowError, MetricsInputError, ModelError, ExportError,
               TuningError, RunError, TrainingDiverged, WriteError)


class Parser(argparse.ArgumentParser):
    """argparse with the project's error format: one line on stderr, exit code 2, no usage block."""

    def error(self, message: str):
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def common_args(p: argparse.ArgumentParser, lr: float, batch_size: int) -> None:
    """Flags both scripts share: model and precision, the head's optimiser, run folder, export and push."""
    p.add_argument("--model", default=DEFAULT_MODEL, help="Hub id, local folder, or 'smollm2-135m' (embedded)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--val-fraction", type=float, default=0.2, help="held out of the training data, stratified")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=learning_rate, help=f"the head's learning rate, or auto: {len(GRID)} heads at once, "
                   f"one per rate from {GRID[0]:g} to {GRID[-1]:g}, the lowest validation loss kept (the default "
                   f"for the head alone; otherwise {lr:g})")
    p.head_lr = lr  # --lr's default where auto does not apply
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of steps")
    p.add_argument("--schedule", choices=["linear", "cosine"], default="cosine")
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--ema", type=float, default=0.97, help="weight averaging decay for the head (0: off)")
    p.add_argument("--select", choices=["best", "last"], default="best",
                   help="the epoch whose weights are kept: the best validation score (the task's metric), or the last")
    p.add_argument("--patience", type=int, default=0, metavar="N",
                   help="stop after N epochs without a better validation score (0: never)")
    p.add_argument("--log-every", type=int, default=10, metavar="N",
                   help="a row in log.jsonl every N optimizer steps: loss, lr, grad norm, examples/s (0: off)")
    p.add_argument("--report-to", choices=["none", "tensorboard"], default="none",
                   help="tensorboard: also write event files under RUN/tensorboard/ (needs `pip install tensorboard`)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto", help="backbone compute dtype")
    p.add_argument("--max-tokens", type=int, help="tokens per backbone batch, padding included (default: 32768 on "
                   "CUDA, where bigger batches keep the GPU busy; 8192 elsewhere)")
    p.add_argument("--compile", nargs="?", const="on", default="auto", choices=["auto", "on", "off"],
                   help="torch.compile the frozen feature pass (~50 s on an H200, ~5 min on 2 CPU cores, then 1.3x / "
                   "1.1x faster): auto (default) compiles a split's pass from 30M tokens on CUDA, 8M on CPUs, where "
                   "it pays: SQuAD v2 train, not SST-2")
    p.add_argument("--zero-shot", action="store_true", help="also score the LM's own prompted answers")
    p.add_argument("--count-params-only", action="store_true", help="print the parameter analysis from the config")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--run-name", help="default: task, model, mode, lr and seed")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    p.add_argument("--export", help="write a full transformers checkpoint (fp32) to this folder")
    p.add_argument("--merge", action="store_true", help="with --lora-rank: fold the adapters into the exported weights")
    p.add_argument("--peft", action="store_true", help="with --lora-rank: export the adapters and head in PEFT's "
                   "format (adapter_config.json + adapter_model.safetensors) instead of merging them")
    p.add_argument("--push-to-hub", metavar="USER/REPO")
    p.add_argument("--private", action="store_true")
    p.add_argument("--push-full", action="store_true", help="push the full export instead of the head")
    p.add_argument("--max-train-examples", type=int, metavar="N", help="a sample of the training data, each class "
                   "(QA: answerable or not) in its share, seeded by --seed")
    p.add_argument("--max-eval-examples", type=int, metavar="N", help="the same of each test set")
    p.add_argument("--grad-accum", type=int, default=1, metavar="N", help="micro-batches per optimizer step")
    t = p.add_argument_group("training the backbone too (default: the head alone, on cached features)")
    mode = t.add_mutually_exclusive_group()
    mode.add_argument("--lora-rank", type=int, default=0, metavar="R", help="low-rank adapters on --lora-targets")
    mode.add_argument("--unfreeze-last", type=int, default=0, metavar="K",
                      help="train the top K decoder blocks and the final norm")
    t.add_argument("--lora-alpha", type=float, help="the adapters' scale is alpha/R (default: 2R)")
    t.add_argument("--lora-dropout", type=float, default=0.0)
    t.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj",
                   help="comma list of Linear layer names (e.g. also gate_proj,up_proj,down_proj)")
    t.add_argument("--backbone-lr", type=float, help="learning rate of what trains in the backbone (--lr stays "
                   "the head's); default 1e-3 for LoRA, 1e-5 for --unfreeze-last")
    t.add_argument("--grad-checkpoint", action="store_true",
                   help="recompute each decoder block's activations in backward: far less memory, ~1/3 more time")


def learning_rate(text: str) -> float | str:
    """--lr: a number, or auto."""
    return AUTO if text == AUTO else float(text)


def positive(x) -> bool:
    return x is not None and math.isfinite(x) and x > 0


def rate(x) -> bool:
    return positive(x) and x <= 10


# flag -> (what must hold, how it reads); flags a script lacks, or left at None, are not checked
CHECKS: dict[str, tuple[Callable, str]] = {
    # AdamW moves each weight by about lr a step: past 10 nothing can train, and past ~1e38 float32 overflows
    "lr": (lambda x: x == AUTO or rate(x), "a number > 0 and at most 10 (or auto)"),
    "backbone_lr": (rate, "a number > 0 and at most 10"),
    **{k: (positive, "a finite number > 0") for k in ("max_grad_norm", "lora_alpha")},
    **{k: (lambda x: x >= 1, "at least 1") for k in (
        "epochs", "batch_size", "max_length", "grad_accum", "max_tokens", "doc_stride", "max_question_tokens",
        "n_best", "max_answer_length", "max_train_examples", "max_eval_examples")},
    **{k: (lambda x: x >= 0, "at least 0") for k in ("lora_rank", "unfreeze_last", "patience", "log_every")},
    **{k: (lambda x: 0 < x < 1, "between 0 and 1 (exclusive)") for k in ("val_fraction", "article_split")},
    **{k: (lambda x: 0 <= x < 1, "in [0, 1)") for k in ("warmup", "ema", "lora_dropout")},
    **{k: (lambda x: math.isfinite(x) and x >= 0, "a finite number >= 0") for k in ("weight_decay",
                                                                                  "cache_budget_gb")},
}


def parse(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse the flags, refuse what cannot work (before any work is done) and fill the mode-dependent defaults."""
    args = p.parse_args(argv)
    check_device(p, args.device)
    if args.lora_rank and args.lora_alpha is None:
        args.lora_alpha = 2.0 * args.lora_rank
    if args.backbone_lr is None:
        args.backbone_lr = 1e-3 if args.lora_rank else 1e-5
    head_lr = p.head_lr
    if args.lr is None:  # the choice is the mode's: a grid where the backbone is frozen
        args.lr = AUTO if mode(args).lr_grid else head_lr
    elif args.lr == AUTO and not mode(args).lr_grid:
        p.error(f"--lr auto trains a grid of heads on the frozen backbone's features: the head alone; with "
                f"--lora-rank or --unfreeze-last pass a number (default {head_lr:g})")
    if args.report_to == "tensorboard":
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            p.error("--report-to tensorboard needs the tensorboard package: pip install tensorboard")
    if args.max_tokens is None:
        args.max_tokens = 32768 if pick_device(args.device).type == "cuda" else 8192
    for name, (ok, wants) in CHECKS.items():
        value = getattr(args, name, None)
        if value is not None and not ok(value):
            p.error(f"--{name.replace('_', '-')} {value}: must be {wants}")
    if args.merge and args.peft:
        p.error("--merge folds the adapters into the weights, --peft keeps them apart: pass one")
    if args.lora_rank and args.export and not (args.merge or args.peft):
        p.error("--export with --lora-rank needs one of --merge (the adapters folded into a transformers "
                "checkpoint) or --peft (the adapters in PEFT's format)")
    if args.peft and not (args.lora_rank and args.export):
        p.error("--peft writes LoRA adapters in PEFT's format: it needs --lora-rank and --export DIR")
    if args.peft and args.push_full:
        p.error("--push-full pushes a merged --export; a LoRA run folder already holds its adapters in PEFT's "
                "format: push it (--push-to-hub without --push-full)")
    if args.push_to_hub:
        try:
            check_repo_id(args.push_to_hub)
        except PushError as e:
            p.error(f"--push-to-hub: {e}")
        if hub.hub_base(args.model) is None:  # said now, not after the training
            p.error(f"--push-to-hub: --model {args.model} is a local folder or name, which no one else can load: the "
                    "card needs the base's Hub id; train with --model ORG/NAME (a downloaded one loads from the Hub "
                    "cache offline)")
    if args.push_full and not args.export:
        p.error("--push-full uploads the --export folder; pass --export DIR too")
    if args.resume and args.overwrite:
        p.error("--resume continues a run, --overwrite replaces it: pass one")
    if not 0 <= args.seed < 2**32:
        p.error(f"--seed {args.seed}: must be in [0, 2**32)")
    if args.run_name is not None and (args.run_name in ("", ".", "..") or any(c in args.run_name for c in "/\\")):
        p.error(f"--run-name {args.run_name!r}: must be a plain folder name (no '/', not '.' or '..'); "
                "--runs-dir says where runs go")
    check_export(p, args)
    set_here = given(p, args, argv)
    for flag, needs, why in IDLE_FLAGS:
        if flag in set_here and not needs(args):
            p.error(f"--{flag.replace('_', '-')} would do nothing {why}")
    return args


# flags that only act with another: (flag, when it acts, what is missing otherwise)
IDLE_FLAGS = (
    *((f, lambda a: a.lora_rank, "without --lora-rank") for f in ("lora_alpha", "lora_dropout", "lora_targets")),
    *((f, lambda a: a.lora_rank or a.unfreeze_last, "without --lora-rank or --unfreeze-last")
      for f in ("backbone_lr", "grad_checkpoint")),
    ("merge", lambda a: a.lora_rank and a.export, "without --lora-rank and --export"),
    ("private", lambda a: a.push_to_hub, "without --push-to-hub"),
    ("label_words", lambda a: a.zero_shot, "without --zero-shot"),
)


def check_device(p: argparse.ArgumentParser, device: str) -> None:
    if device == "auto":
        return
    try:
        kind = torch.device(device).type
    except RuntimeError:
        p.error(f"--device {device}: not a device; pass auto, cpu, cuda or cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {device}: this torch sees no CUDA GPU; pass --device cpu (or auto)")


def check_export(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--export replaces its folder as a whole, so it may only name a new or empty folder, or an earlier export
    that --overwrite or --resume (whose run wrote it) may replace."""
    if not args.export:
        return
    out = Path(args.export)
    if out.exists() and not out.is_dir():
        p.error(f"--export {out}: is a file; pass a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / SETTINGS_FILE).is_file():
            p.error(f"--export {out}: holds other files, which the export would replace; pass a new or empty folder")
        if not (args.overwrite or args.resume):
            p.error(f"--export {out}: holds an earlier export; pass --overwrite to replace it, or another folder")


def given(p: argparse.ArgumentParser, args: argparse.Namespace, argv=None) -> set[str]:
    """The flags the command line set, of those in `args` (argparse fills a flag's default only where the namespace
    it parses into lacks the name)."""
    unset = object()
    seen = p.parse_args(argv, argparse.Namespace(**{k: unset for k in vars(args)}))
    return {k for k, v in vars(seen).items() if v is not unset}


def mode(args: argparse.Namespace) -> Mode:
    """The training mode: the one place that reads --lora-*/--unfreeze-last."""
    if args.lora_rank:
        return LoRA(args.lora_rank, args.lora_alpha, args.lora_dropout, args.lora_targets.split(","),
                    args.grad_checkpoint)
    if args.unfreeze_last:
        return TopBlocks(args.unfreeze_last, args.grad_checkpoint)
    return Mode()


def train_args(args: argparse.Namespace, metric: str) -> TrainArgs:
    """The loop's arguments; `metric`: the validation row's score that --select best and --patience read."""
    return TrainArgs(epochs=args.epochs, lr=None if args.lr == AUTO else args.lr, backbone_lr=args.backbone_lr,
                     weight_decay=args.weight_decay, warmup=args.warmup, schedule=args.schedule,
                     max_grad_norm=args.max_grad_norm, ema=args.ema, grad_accum=args.grad_accum, resume=args.resume,
                     select=args.select, metric=metric, patience=args.patience, log_every=args.log_every,
                     tensorboard=args.report_to == "tensorboard")


def trained_head(cfg: TrainArgs, head: nn.Module) -> nn.Module:
    """What fit trains: the head, or with --lr auto (cfg.lr None) a grid of its copies, one per learning rate."""
    return HeadGrid(head, GRID) if cfg.lr is None else head


def environment(device: torch.device) -> dict:
    """metrics.json's "environment": what the run's numbers were computed with."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPU cores"
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "device": f"{device.type} ({name})"}


def start(args: argparse.Namespace) -> torch.device:
    """The device, joined to torchrun's process group when started by torchrun, and every generator seeded; a cache
    (LLAMA_HEADS_CACHE) that cannot be one is refused first."""
    cache_dir()
    device = pick_device(args.device)
    distributed.setup(device)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    return device


def push(args: argparse.Namespace) -> Push | None:
    return Push(args.push_to_hub, args.private, args.push_full) if args.push_to_hub else None


def passes(args: argparse.Namespace, keep: bool = True) -> Passes:
    return Passes(resolve_model(args.model), args.max_tokens, {"auto": None, "on": True, "off": False}[args.compile],
                  keep)


def run_name(args: argparse.Namespace, task: str, mode: Mode) -> Path:
    """The run folder: --run-name, or a name that says what tells runs apart (not --epochs, which --resume may
    grow)."""
    lr = args.lr if args.lr == AUTO else f"{args.lr:g}"
    name = args.run_name or f"{task}-{Path(args.model).name}-{mode.name}-lr{lr}-s{args.seed}"
    return Path(args.runs_dir) / name


def open_run(args: argparse.Namespace, task: str, mode: Mode, data: str, labels: list[str] | None = None
             ) -> RunDir:
    """The run's folder (RunDir.open), its config.json holding what --resume must find again: the flags, the mode,
    the data's digest, the model's weights (features.model_fingerprint) and a classifier's labels in class-id
    order (its head's rows)."""
    config = {**vars(args), "mode": mode.name, "data": data, "weights": model_fingerprint(resolve_model(args.model)),
              **({"labels": labels} if labels else {})}
    path = run_name(args, task, mode)
    out, folder = Path(args.export or "").resolve(), path.resolve()
    if args.export and (out == folder or out in folder.parents or folder in out.parents):  # export replaces `out`
        raise RunError(f"--export {args.export}: would replace the run folder {path} or hold it; pass a folder "
                       "outside it")
    return RunDir.open(path, config, args.resume, args.overwrite)


def run(main: Callable[[], int]) -> None:
    """A script's entry point: its exit code, or one line on stderr and exit code 2 for what a user caused."""
    try:
        sys.exit(main())
    except USER_ERRORS as e:
        print("error: " + " ".join(str(e).split("\n")), file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted (a training run keeps its last finished epoch: --resume continues from it)",
              file=sys.stderr)
        sys.exit(130)
