"""What predict.py reads a trained model from (its SOURCE): a run folder, an --export folder, an --export --peft
folder or a Hub repo this project pushed. kind() tells them apart from their own files, script_args() rebuilds the
training script's flags as the source recorded them, and load() gives a Predictor: the backbone as the run prepared
it, its tokenizer, its head and the flags that shape its inputs.
"""
import argparse
import contextlib
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

import flags
import hub
import model
import train_cls
import train_qa
from lora import PEFT_FILES, PEFT_LAYOUT, from_peft
from modes import Mode
from rundir import RunDir, RunError, rebuild


TASK_OF_ARCH = {"LlamaForSequenceClassification": "cls", "LlamaForQuestionAnswering": "qa"}
TASK_OF_PEFT = {peft_type: task for task, (_, _, peft_type) in PEFT_LAYOUT.items()}
RUN_FILES = ("config.json", "metrics.json", "head.safetensors")
ADVICE = "pass a run folder (runs/NAME), an --export folder, or the id of a Hub repo this project pushed"
# the training flags predict.py reads from what a source recorded, besides its model (the rest change no prediction)
RECORDED = ("dtype", "max_tokens", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "unfreeze_last")
RECORDED_BY_TASK = {"cls": ("max_length", "pooling", "text_column"),
                    "qa": (*train_qa.WINDOW_FLAGS, "batch_size", "cache_features", "cache_budget_gb")}
DAMAGED = {"run": "the run folder is damaged: train it again (--overwrite)",
           **dict.fromkeys(("export", "peft"), "the export is damaged: export or push it again")}
JSON_TYPES = {str: "string", int: "integer", float: "number"}


class SourceError(model.ModelError):
    """SOURCE is no run, export or pushed repo predict.py can read (a user error: one line, exit code 2)."""


class LM(nn.Module):
    """What the training code calls `lm` (its `.model` is the backbone), around an exported model's backbone."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.model, self.config = backbone, backbone.config

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype


@dataclass
class Predictor:
    task: str  # "cls" | "qa"
    lm: nn.Module
    tokenizer: object
    head: nn.Linear
    mode: Mode
    args: argparse.Namespace  # the training script's flags, as the run had them
    names: list[str] | None = None  # cls: label names, in the head's order
    threshold: float | None = 0.0  # qa (None: SQuAD v1, every question answered)


def locate(source: str) -> Path:
    """A local folder as given, else a Hub repo fetched into the Hub cache."""
    folder = Path(source)
    if folder.is_dir():
        return folder
    if folder.exists():
        raise SourceError(f"{source}: is a file, not a folder; {ADVICE} (a file of inputs goes in --file)")
    if not hub.HUB_ID.fullmatch(source) or "/" not in source:
        raise SourceError(f"{source}: no such folder; {ADVICE}")
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(source, allow_patterns=sorted(set(hub.HEAD_FILES + hub.FULL_FILES))))
    except Exception as e:  # offline, unknown repo, no access: all one line
        raise SourceError(f"{source}: no such folder, and no Hub repo to fetch ({hub.why(e)}); {ADVICE} "
                          "(a local copy works offline)") from None


def kind(folder: Path) -> tuple[str, str]:
    """('run' | 'export' | 'peft', 'cls' | 'qa') from the folder's own metadata."""
    if all((folder / f).is_file() for f in RUN_FILES):
        info = RunDir(folder).read_json("metrics.json")
        if info.get("task") == "squad_v2":
            return "run", "qa"
        if info.get("labels"):  # train_cls.py records its labels, whatever the task
            return "run", "cls"
        raise SourceError(f"{folder}: a run of task {info.get('task')!r}; predict.py reads runs of train_cls.py "
                          "(classification) and train_qa.py (squad_v2)")
    if (folder / PEFT_FILES[0]).is_file() and (folder / model.SETTINGS_FILE).is_file():
        peft_type = read_json(folder / PEFT_FILES[0]).get("task_type")
        if peft_type not in TASK_OF_PEFT:
            raise SourceError(f"{folder}: a PEFT adapter of task type {peft_type!r}; this project writes "
                              f"{' or '.join(TASK_OF_PEFT)}")
        return "peft", TASK_OF_PEFT[peft_type]
    archs = (read_json(folder / "config.json").get("architectures") or []) if (folder / "config.json").is_file() \
        else []
    task = next((TASK_OF_ARCH[a] for a in archs if a in TASK_OF_ARCH), None)
    if task is None:
        raise SourceError(f"{folder}: neither a run folder ({', '.join(RUN_FILES)}), nor an export of "
                          f"{' or '.join(TASK_OF_ARCH)} (config.json architectures: {archs or 'none'}), nor a PEFT "
                          f"export ({PEFT_FILES[0]} and {model.SETTINGS_FILE}); {ADVICE}")
    return "export", task


def read_json(path: Path) -> dict:
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SourceError(f"{path} does not read as JSON ({type(e).__name__}); export or push it again") from None
    if not isinstance(out, dict):
        raise SourceError(f"{path}: expected a JSON object; export or push it again")
    return out


def settings(folder: Path) -> dict:
    """What an export recorded of its run besides the weights (model.SETTINGS_FILE); older exports have none."""
    path = folder / model.SETTINGS_FILE
    return read_json(path) if path.is_file() else {}


def make_head(task: str, n_labels: int):
    return (lambda hidden: model.cls_head(hidden, n_labels)) if task == "cls" else model.qa_head


def recorded(folder: Path, what: str) -> tuple[dict, Path]:
    """The training flags a source recorded, and where (named when they are damaged)."""
    if what == "run":
        return RunDir(folder).read_json("config.json"), folder / "config.json"
    if what == "export":  # the export's own weights; fp32 where an older export records no dtype
        return {"dtype": "fp32", **settings(folder), "model": str(folder)}, folder / model.SETTINGS_FILE
    config = read_json(folder / PEFT_FILES[0])
    try:
        lora_flags = {"lora_rank": int(config["r"]), "lora_alpha": float(config["lora_alpha"]),
                      "lora_targets": ",".join(config["target_modules"])}
    except (KeyError, TypeError, ValueError) as e:
        raise SourceError(f"{folder / PEFT_FILES[0]}: not a PEFT export of this project ({e}); export it "
                          "again") from None
    return {**settings(folder), **lora_flags}, folder


def script_args(task: str, what: str, folder: Path, opts) -> argparse.Namespace:
    """The training script's flags as the source recorded them, put through the script's own parse_args (types,
    choices, ranges, how flags combine), so a damaged or hand-edited file is one line before anything loads; then
    this command's overrides."""
    script = train_cls if task == "cls" else train_qa
    values, where = recorded(folder, what)
    defaults = vars(script.parse_args([]))
    # defaults are left out: given, one that acts only with another flag would be refused (flags.IDLE_FLAGS)
    given = {k: v for k in RECORDED + RECORDED_BY_TASK[task] if (v := values.get(k)) is not None and v != defaults[k]}
    given["model"] = values.get("model")  # none is damage, not the default model
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            args = script.parse_args([f"--{k.replace('_', '-')}={v}" for k, v in given.items()])
    except SystemExit:
        why = said.getvalue().strip().removeprefix("error: ").removesuffix(" (see --help)")
        raise SourceError(f"{where}: a recorded flag {script.__name__}.py refuses ({why}); {DAMAGED[what]}") from None
    for key, value in given.items():
        if getattr(args, key) != value:  # "256" for 256, 5 for "5": not what the script writes
            raise SourceError(f"{where}: {key} {value!r}: expected a JSON {JSON_TYPES[type(getattr(args, key))]}; "
                              f"{DAMAGED[what]}")
    args.device, args.compile = opts.device, "auto"
    args.max_tokens = opts.max_tokens or args.max_tokens
    args.dtype = opts.dtype or args.dtype
    return args


def threshold(opts, info: dict, where: Path, what: str) -> float | None:
    """QA: --threshold, else the one the run chose on validation (recorded in its metrics.json or export); None
    (null there): the run trained on SQuAD v1 data, and answers every question."""
    if opts.threshold is not None:
        return opts.threshold
    value = info.get("threshold", 0.0)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SourceError(f"{where}: threshold {value!r}: expected a finite number; {DAMAGED[what]}")
    return value


def load_run(folder: Path, task: str, opts, args: argparse.Namespace) -> Predictor:
    """The run as train_qa.evaluate_run rebuilds it: the base model, prepared by the run's mode, its trained weights."""
    run = RunDir(folder)
    info = run.read_json("metrics.json")
    cut = threshold(opts, info, run.file("metrics.json"), "run")
    mode = flags.mode(args)
    device = model.pick_device(args.device)
    lm, tokenizer, head = run.restore(mode, make_head(task, len(info.get("labels") or [0, 1])), args.model, device,
                                      model.pick_dtype(device, args.dtype), task)
    names = info.get("label_names") or info.get("labels")  # as the run recorded them (older runs: the values)
    return Predictor(task, lm, tokenizer, head, mode, args, names=names if task == "cls" else None, threshold=cut)


def load_export(folder: Path, task: str, opts, args: argparse.Namespace) -> Predictor:
    """An --export checkpoint (or a full pushed repo): its backbone and head, read as the run read its own."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification
    auto = AutoModelForSequenceClassification if task == "cls" else AutoModelForQuestionAnswering
    device = model.pick_device(args.device)
    cut = threshold(opts, settings(folder), folder / model.SETTINGS_FILE, "export")
    try:  # not model.loading: its message names a --model flag, and predict.py was given the source
        tokenizer = model.load_tokenizer(str(folder))
        # the run's compute dtype (bf16 on GPUs and AMX CPUs), as the export records it
        full = auto.from_pretrained(folder, dtype=model.pick_dtype(device, args.dtype))
    except (OSError, ValueError, SafetensorError) as e:
        raise SourceError(f"{opts.source}: cannot load it ({hub.why(e)}); {DAMAGED['export']}") from None
    full.requires_grad_(False).eval().to(device)
    head = (full.score if task == "cls" else full.qa_outputs).float()  # the run's head computed in fp32
    names = None
    if task == "cls":
        names = [str(full.config.id2label.get(i, i)) for i in range(head.out_features)]  # as pipeline shows them
    return Predictor(task, LM(full.base_model), tokenizer, head, Mode(), args, names=names, threshold=cut)


def load_peft(folder: Path, task: str, opts, args: argparse.Namespace) -> Predictor:
    """An --export --peft folder: the base model with the run's LoRA adapters and head, read from PEFT's files."""
    recorded = settings(folder)
    cut = threshold(opts, recorded, folder / model.SETTINGS_FILE, "peft")
    try:
        trained = from_peft(RunDir(folder).load_weights(PEFT_FILES[1]), task)
    except (KeyError, TypeError, ValueError, RunError) as e:
        raise SourceError(f"{folder}: not a PEFT export of this project ({e}); export it again") from None
    head_state = {k.removeprefix("head."): t for k, t in trained.items() if k.startswith("head.")}
    n_labels = len(head_state.get("weight", [0, 0]))
    mode, device = flags.mode(args), model.pick_device(args.device)
    lm, tokenizer, head = rebuild(mode, make_head(task, n_labels), args.model, device,
                                  model.pick_dtype(device, args.dtype), head_state, trained,
                                  folder / PEFT_FILES[1], folder / PEFT_FILES[1])
    names = recorded.get("label_names") or [str(i) for i in range(n_labels)]
    return Predictor(task, lm, tokenizer, head, mode, args, names=names if task == "cls" else None, threshold=cut)


def load(folder: Path, what: str, task: str, opts, args: argparse.Namespace) -> Predictor:
    with contextlib.redirect_stdout(sys.stderr):  # the loaders' notes; stdout carries predictions
        return {"run": load_run, "export": load_export, "peft": load_peft}[what](folder, task, opts, args)
