"""A run's folder: the one place that names and writes its files (config, metrics, per-epoch log, resume
checkpoint, head, trained backbone parameters) and decides when an existing folder may be reused."""
import atexit
import contextlib
import fcntl
import hashlib
import json
import math
import os
import pickle
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

import distributed
from data.labelled import sorted_labels
from features import model_fingerprint
from files import atomic_path, write_atomic, write_error, write_safetensors
from lora import PEFT_FILES, from_peft, write_peft
from model import load_backbone, resolve_model
from modes import load_trained, trained_parameters

TRAINED_FILE = "adapters.safetensors"  # what an --unfreeze-last run trained in the backbone, and its head
# config keys that may change between a run and its --resume: where things go, how fast, what else is scored, and
# the data's files by path (the "data" digest compares what they hold, so moved or copied data resumes)
RESUMABLE_CHANGES = {"epochs", "resume", "overwrite", "run_name", "runs_dir", "export", "merge", "peft",
                     "push_to_hub", "private", "push_full", "device", "compile", "max_tokens", "zero_shot",
                     "count_params_only", "cache_features", "cache_budget_gb", "eval_run", "data_dir", "train_file",
                     "eval_file", "log_every", "report_to"}


# what a changed config key that is not a flag means
CHANGED = {"data": "the data (texts or labels) changed",
           "weights": "the model's weights changed (another Hub revision, or other files in its folder)",
           "mode": "the training mode changed (--lora-rank / --unfreeze-last)",
           "epochs": "--epochs may grow on --resume, not shrink",
           "labels": "its head numbers the labels in another order (runs before MNLI took GLUE's ids sorted them)"}


def weights_known(config: dict) -> bool:
    """Whether a run recorded its model's weights: not runs from before they were, nor a Hub model that was not
    downloaded yet when the run began (features.model_fingerprint gives the bare id then)."""
    return config.get("weights", config.get("model")) != config.get("model")


class RunError(ValueError):
    """A run folder that cannot be used as asked: it exists, it was made otherwise, or its files are corrupt."""


def strict_json(obj) -> str:
    """JSON any strict parser reads: a non-finite float (a metric of an empty class, a diverged loss) is null."""
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x
    return json.dumps(clean(obj), indent=1, allow_nan=False) + "\n"


def fingerprint(*parts) -> str:
    """A digest of JSON-able data (texts, labels, examples): equal data, equal digest."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def write_json(path: Path, obj) -> None:
    write_atomic(path, strict_json(obj))


_HELD: dict[Path, int] = {}  # the run locks this process holds (a test, or a script, may open its run again)


def lock_run(path: Path) -> None:
    """Claim the run folder `path` for this process, before anything reads or writes it: of two processes that open
    the same run, one proceeds and the other stops here, naming the holder. The lock is an flock on .NAME.lock beside
    the folder, holding "pid N on HOST": the kernel drops it when its process ends, however it ends, so a run killed
    with -9 leaves no stuck lock (the next run takes it over, saying so); a clean exit removes the file."""
    lock = (path.parent / f".{path.name}.lock").absolute()
    if lock in _HELD:
        return
    me = f"pid {os.getpid()} on {socket.gethostname()}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot make the run folder {path} ({e.strerror}); pass another --runs-dir") from None
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise write_error(e, lock) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunError(f"{path} is in use by {holder} (lock {lock}); wait for that run to end, or pass another "
                           "--run-name") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # its holder ended and removed it between our open and our lock: try again
            same = False
        if same:
            break
        os.close(fd)
    if old := os.read(fd, 200).decode(errors="replace").strip():
        print(f"{lock}: taking over the lock of {old}, which ended without releasing it")
    with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, only its holder goes unnamed
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode(), 0)
    _HELD[lock] = fd
    atexit.register(_unlock, lock)


def _unlock(lock: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(lock)  # first: whoever opens it after this makes a new file (lock_run checks it is the same)
    os.close(_HELD.pop(lock))


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._replacing: dict | None = None  # the config of a run that --overwrite puts here at its first write
        self._config: dict | None = None  # the config a --resume writes with its first files

    @classmethod
    def open(cls, path: Path, config: dict, resume: bool, overwrite: bool) -> "RunDir":
        """The folder for a new run, or the run to resume. An existing run is never silently replaced: it needs
        --resume (which refuses a run made with other data, model, mode or hyperparameters) or --overwrite, which
        keeps the old run until this one writes its first file (its first epoch's log): a new run that fails
        before that (a typo in a flag, a model that does not load) loses nothing."""
        run = cls(path)
        if not distributed.is_main():  # rank 0 checks and makes the folder; the others wait for it
            distributed.barrier()
            return run
        if run.path.exists() and not run.path.is_dir():
            raise RunError(f"{run.path} is a file, not a run folder; pass another --runs-dir or --run-name")
        lock_run(run.path)
        # a folder holding only its config stopped before any work was saved (e.g. the model did not load)
        started = run.path.is_dir() and any(f.name != "config.json" for f in run.path.iterdir())
        if started and not run.file("config.json").is_file():  # --overwrite removes runs, nothing else
            raise RunError(f"{run.path} holds files but no run (no config.json); pass another --run-name or "
                           "--runs-dir")
        if started and overwrite:
            print(f"--overwrite: {run.path} is replaced when this run saves its first epoch")
            run._replacing = config
            run.check_writable()
            distributed.barrier()
            return run
        if started and resume:  # its new config is written with the next epoch (or the metrics): as it was till then
            run.check_same_config(config)
            run._config = config
            run.check_writable()
            distributed.barrier()
            return run
        if started:
            raise RunError(f"{run.path} holds a run already; pass --resume to continue it, --overwrite to replace "
                           "it, or another --run-name")
        elif resume:  # a job script may always pass --resume: its first start has nothing to continue
            print(f"--resume: {run.path} holds no run yet; starting it")
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunError(f"cannot make the run folder {run.path} ({e.strerror}); pass another --runs-dir") from None
        run.write_config(config)
        distributed.barrier()
        return run

    def check_writable(self) -> None:
        """Before any work: a run folder this process cannot write to (read-only, no permission) is one line now,
        not after the features and an epoch."""
        try:
            tempfile.TemporaryFile(dir=self.path).close()  # a real write: os.access says yes to root everywhere
        except OSError as e:
            raise write_error(e, self.path) from None

    def check_same_config(self, config: dict) -> None:
        saved = self.path / "config.json"
        if not saved.is_file():
            return  # interrupted before its first epoch ended: nothing to continue, nothing to contradict
        old = self.read_json("config.json")
        if "labels" in config and "labels" not in old:  # recorded since; a classifier's ids were sorted values then
            old["labels"] = sorted_labels(config["labels"])
        differ = sorted(k for k in (set(old) | set(config)) - RESUMABLE_CHANGES
                        if k in old and k in config and old[k] != config[k])
        if "weights" in differ and not weights_known(old):
            differ.remove("weights")
        if "model" in differ and weights_known(old) and "weights" not in differ:  # the same weights, moved
            differ.remove("model")
        if config.get("epochs", 0) < old.get("epochs", 0):
            differ.append("epochs")
        if differ:
            what = "; ".join(CHANGED.get(k) or f"--{k.replace('_', '-')} was {old[k]!r}, now {config[k]!r}"
                             for k in differ)
            raise RunError(f"--resume: {self.path} was made otherwise ({what}); resume with its own flags, or "
                           "start a new run (--run-name, or --overwrite)")

    def file(self, name: str) -> Path:
        return self.path / name

    def read_json(self, name: str) -> dict:
        try:
            obj = json.loads(self.file(name).read_text())
        except (OSError, ValueError) as e:
            obj, why = None, type(e).__name__
        else:
            why = f"a JSON {type(obj).__name__}, not an object"
        if not isinstance(obj, dict):
            raise RunError(f"{self.file(name)} does not read as a run's JSON ({why}); the run folder is damaged: "
                           "train it again (--overwrite)")
        return obj

    def write_config(self, config: dict) -> None:
        write_json(self.file("config.json"), config)

    def _commit(self, files: dict[str, Callable[[Path], None]], stale: tuple[str, ...] = ()) -> None:
        """Write files together: each writer fills a temp file, and only when all are written do they replace the
        old ones (then, with --overwrite, the old run goes; `stale` files are removed), so a write that fails (no
        space, read-only) leaves the folder as it was. A --resume's or --overwrite's config goes with them."""
        config = self._replacing or self._config
        if config is not None:
            files = {"config.json": lambda tmp: tmp.write_text(strict_json(config), encoding="utf-8"), **files}
        with contextlib.ExitStack() as stack:
            temps = {name: stack.enter_context(atomic_path(self.file(name))) for name in files}
            for name, write in files.items():
                write(temps[name])
            if self._replacing is not None:  # the new run's files are written: the old run goes now
                keep = {t.name for t in temps.values()}
                for f in self.path.iterdir():
                    if f.name not in keep:
                        shutil.rmtree(f) if f.is_dir() and not f.is_symlink() else f.unlink()
            for name in stale:
                self.file(name).unlink(missing_ok=True)
        self._replacing = self._config = None

    def write_metrics(self, info: dict) -> None:
        """The run's summary, written last: a folder without it holds an unfinished run (--resume completes it)."""
        self._commit({"metrics.json": lambda tmp: tmp.write_text(strict_json(info), encoding="utf-8")})

    def save_epoch(self, rows: list[dict], state: dict) -> None:
        """An epoch's log and resume checkpoint, together. A run finished before (a --resume that grows --epochs)
        loses its metrics.json with them: until this run writes its own, the folder holds an unfinished run."""
        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: a full disk is an OSError, not a RuntimeError of torch's
                torch.save(state, f)
        log = "".join(strict_json(r).replace("\n", "") + "\n" for r in rows)
        self._commit({"log.jsonl": lambda tmp: tmp.write_text(log, encoding="utf-8"), "ckpt.pt": save},
                     stale=("metrics.json",))

    def load_checkpoint(self, device: torch.device) -> dict | None:
        """The resume state onto `device` (map_location: a GPU run resumes on a CPU or on another rank's GPU). Only
        tensors and plain values load (weights_only): a checkpoint from elsewhere cannot run code."""
        ckpt = self.file("ckpt.pt")
        if not ckpt.exists():
            return None
        try:
            return torch.load(ckpt, map_location=device, weights_only=True)
        except pickle.UnpicklingError as e:
            if "weights only" in str(e).lower():
                raise RunError(f"{ckpt} holds Python objects besides tensors and plain values, which are not loaded "
                               "(they could run code); if this is your own run, from before 2026-12-03, start it "
                               "again with --overwrite") from None
            why = type(e).__name__
        except Exception as e:  # a truncated or foreign file: zip and torch errors alike
            why = type(e).__name__
        raise RunError(f"{ckpt} does not load ({why}); delete it to restart that run from scratch, or --overwrite")

    def save_weights(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        write_safetensors(self.file(name), {k: t.detach().cpu().contiguous() for k, t in tensors.items()})

    def load_weights(self, name: str) -> dict[str, torch.Tensor]:
        try:
            return load_file(self.file(name))
        except (SafetensorError, OSError) as e:
            raise RunError(f"{self.file(name)} does not load ({type(e).__name__}); the run folder is damaged: "
                           "train it again (--overwrite)") from None

    def save_trained(self, head: nn.Module, backbone: nn.Module, mode, task: str, base: str) -> None:
        """head.safetensors, and what else trained, once: a LoRA run's adapters (and head) in PEFT's format, so the
        folder and its push load with PeftModel.from_pretrained on the base model `base`; the top blocks of an
        --unfreeze-last run in adapters.safetensors, keyed by module path (modes.trained_parameters)."""
        self.save_weights("head.safetensors", head.state_dict())  # claims the folder before write_peft
        if adapter := mode.peft(backbone, head, task, base):
            write_peft(self.path, adapter)
        elif mode.trains_backbone:
            self.save_weights(TRAINED_FILE, trained_parameters(backbone, head))

    def trained_file(self) -> Path:
        """Where the backbone's trained weights are: PEFT's file in a LoRA run, else adapters.safetensors (also in
        LoRA runs from before 2026-11-30)."""
        peft = self.file(PEFT_FILES[1])
        return peft if peft.exists() else self.file(TRAINED_FILE)

    def load_trained(self, task: str) -> dict[str, torch.Tensor]:
        """The backbone's trained weights and the head under modes.trained_parameters' keys."""
        path = self.trained_file()
        tensors = self.load_weights(path.name)
        if path.name == TRAINED_FILE:
            return tensors
        try:
            return from_peft(tensors, task)
        except ValueError as e:
            raise RunError(f"{path}: {e}; the run folder is damaged: train it again (--overwrite)") from None

    def restore(self, mode, make_head, model_name: str, device: torch.device, dtype: torch.dtype, task: str):
        """(lm, tokenizer, head) as the run trained them (see rebuild). The run's files are read, and the model's
        weights checked against those it trained on, before the backbone loads: a damaged run fails fast."""
        state = self.load_weights("head.safetensors")
        trained = self.load_trained(task) if mode.trains_backbone else None
        config = self.read_json("config.json")
        if weights_known(config) and model_fingerprint(resolve_model(model_name)) != config["weights"]:
            raise RunError(f"{self.path} was trained on other weights of {model_name} (another Hub revision, or "
                           "other files in its folder); load the run's own model, or train it again on this one")
        return rebuild(mode, make_head, model_name, device, dtype, state, trained, self.file("head.safetensors"),
                       self.trained_file())


def rebuild(mode, make_head, model_name: str, device: torch.device, dtype: torch.dtype, head_state: dict,
            trained: dict | None, head_file: Path, trained_file: Path):
    """(lm, tokenizer, head): the base backbone prepared by `mode`, with the head's weights and what the mode trained
    (modes.trained_parameters' keys), in eval mode on `device`."""
    lm, tokenizer = load_backbone(model_name, device, dtype)
    head = make_head(lm.config.hidden_size)
    try:
        head.load_state_dict(head_state)
    except RuntimeError:
        raise RunError(f"{head_file} does not fit the run's head ({tuple(head.weight.shape)} weights); the run "
                       "folder is damaged: train it again (--overwrite)") from None
    mode.prepare(lm.model)
    if trained is not None:
        load_trained(lm.model, head, trained, trained_file)
    return lm.eval(), tokenizer, head.to(device).eval()
