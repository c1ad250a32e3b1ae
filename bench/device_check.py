"""Every GPU check in one command and one table: the CUDA code paths, the speed at Llama-3.2-1B's shape, QA that learns.

    bench/device_check.sh                     # on a lent GPU machine, after bench/transfer.py's parts (bench/README.md)
    bench/device_check.sh --smoke             # the same sequence on the CPU at tiny size (tests/test_device_check.py)
    bench/device_check.sh --stages cls,speed  # some stages only

Stages, in order, each time-boxed (--budget caps them all): one that fails or runs out of time is a FAIL row, and
the next stage runs.
  setup     the device and versions; the carried files (bench/transfer.py unpack); the embedded SmolLM2 converted
            (--smoke: a tiny random Llama with SmolLM2's tokenizer)
  cls       train_cls.py on the SST-2 sample, end to end (bf16 features, pinned copies, --compile auto); the same run
            again with a Ctrl-C in epoch 2 and --resume gives the same weights and numbers, bit for bit; predict.py
            on its --export gives the run's test confusion matrix
  qa        train_qa.py with LoRA r=8 and dropout (autocast, the CUDA generator), likewise, --export --merge; its
            checkpoint holds the CUDA generator's state. Its runs use torch's deterministic algorithms (flash
            attention's backward is not deterministic otherwise), so any difference is the resume's
  torchrun  train_cls.py under torchrun on every local GPU (NCCL; --smoke: 2 CPU ranks, gloo) = one process
  speed     bench/gpu.py at Llama-3.2-1B's shape: SST-2 3 epochs against the backbone floor (its FLOPs at the
            measured matmul ceiling), the SQuAD pass's MFU, and the peers of bench/cpu.py
  learn     SmolLM2 on the SQuAD 2.0 dev set's articles (--article-split 0.2): a frozen head and zero-shot, then
            LoRA on every projection, on the held-out articles; against always-no-answer
The CLIs run in forked children of this process, which imported them once (a start-up costs 5-20 s); torchrun
starts its own. Full results: device_check.json (and gpu.json, logs.tar.gz) under --out (default $OUT).
"""
import argparse
import dataclasses
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLES = ROOT / "data" / "samples"
STAGES = ("setup", "cls", "qa", "torchrun", "speed", "learn")
PASS, FAIL, NA, INFO = "pass", "FAIL", "n/a", "-"
INTERRUPTED = 130  # flags.run's exit code after Ctrl-C
MARKER = ".device-check"  # in a --work folder this script made, which a later check may replace
TRAINED_FILES = ("head.safetensors", "adapter_model.safetensors", "adapters.safetensors")
LORA_ALL = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


@dataclasses.dataclass(frozen=True)
class Plan:
    """What each stage runs: the GPU sizes, or --smoke's."""
    smoke: bool
    device: str
    boxes: dict[str, float]  # each stage's time box, seconds
    epochs: int
    cls: list[str]
    qa: list[str]
    learn_split: str
    learn: list[str]
    learn_lora: list[str]
    gpu: list[str]


GPU = Plan(smoke=False, device="auto", epochs=3,
           boxes={"setup": 60, "cls": 100, "qa": 120, "torchrun": 60, "speed": 200, "learn": 240},
           cls=[], qa=["--max-train-examples", "300", "--max-eval-examples", "150"],
           learn_split="0.2", learn=["--max-eval-examples", "1000", "--epochs", "3"],
           learn_lora=["--lora-rank", "16", "--lora-targets", LORA_ALL, "--epochs", "2"],
           gpu=["--lora-windows", "0", "--sweep-max-tokens", ""])
SMOKE = Plan(smoke=True, device="cpu", epochs=2,
             boxes={"setup": 60, "cls": 120, "qa": 120, "torchrun": 120, "speed": 120, "learn": 120},
             cls=["--batch-size", "8"], qa=["--max-train-examples", "24", "--max-eval-examples", "12",
                                            "--batch-size", "8"],
             learn_split="0.25", learn=["--max-train-examples", "30", "--max-eval-examples", "12", "--epochs", "1"],
             learn_lora=["--lora-rank", "4", "--lora-targets", LORA_ALL],
             gpu=["--tiny", "--device", "cpu", "--n-train", "32", "--n-test", "8", "--n-qa-windows", "4",
                  "--peer-steps", "3", "--careful-batch", "4", "--matmul-size", "64", "--lora-windows", "0",
                  "--sweep-max-tokens", ""])


class StageError(RuntimeError):
    """A command of a stage failed or ran out of its time box: the stage's FAIL row says which, and why."""


# ---------------------------------------------------------------- children: the CLIs, forked once imported

def fork(target: Callable[[], None], log: Path, env: dict[str, str], deadline: float) -> int | None:
    """target() in a forked child with stdout and stderr in `log`: its exit code, or None if killed (with its
    process group) at `deadline`. This process never touches CUDA, so each child starts it afresh."""
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():  # torch's idle native threads hold no lock a child needs (as DataLoader forks)
        warnings.filterwarnings("ignore", ".*multi-threaded.*fork", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setpgid(0, 0)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = open(1, "w", buffering=1, closefd=False)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
            os.environ.update(env)
            target()
            code = 0
        except SystemExit as e:
            if isinstance(e.code, str):  # sys.exit("message"): the interpreter would print it
                print(e.code, file=sys.stderr)
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return wait(pid, deadline)


def wait(pid: int, deadline: float) -> int | None:
    """The child's exit code, or None once it and its process group are killed at `deadline`."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.05)


def as_script(script: str, args: list[str], deterministic: bool, interrupt: int | None) -> Callable[[], None]:
    """Run `script` as `python script args` would, in this (forked) process; with `interrupt`, Ctrl-C it as epoch
    `interrupt` ends, before that epoch's checkpoint (the last one kept is the epoch before)."""
    def target():
        if interrupt:
            import loop
            print_row = loop.print_row

            def ctrl_c(row, header):
                if row["epoch"] == interrupt:
                    raise KeyboardInterrupt
                print_row(row, header)
            loop.print_row = ctrl_c
        if deterministic:
            import torch
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # what deterministic cuBLAS needs, before CUDA starts
            torch.use_deterministic_algorithms(True, warn_only=True)
        sys.argv = [str(ROOT / script), *args]
        runpy.run_path(str(ROOT / script), run_name="__main__")
    return target


# functions run in a child (they use torch; this process only reads JSON)

def device_info() -> dict:
    import platform

    import torch
    import transformers
    out = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        return {**out, "device": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(),
                "cuda": torch.version.cuda}
    return {**out, "device": f"CPU ({os.cpu_count()} cores)", "gpus": 0}


def embedded_model() -> dict:
    """The embedded SmolLM2, converted (from the carried GGUF on a GPU machine)."""
    import smollm2
    t0 = time.perf_counter()
    smollm2.local_folder()
    return {"model": smollm2.NAME, "convert_s": time.perf_counter() - t0, "gguf": str(smollm2.gguf_path())}


def tiny_llama(folder: str) -> dict:
    """A random 2-layer Llama with SmolLM2's tokenizer, saved like any Hub checkpoint (as tests/conftest.py does)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    import smollm2
    tokenizer = AutoTokenizer.from_pretrained(smollm2.local_folder())
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"model": folder}


def weight_diff(run_a: str, run_b: str) -> dict:
    """The trained files of two runs: bit-identical or not, and the largest difference."""
    import torch
    from safetensors.torch import load_file
    equal, largest = True, 0.0
    for name in TRAINED_FILES:
        a, b = Path(run_a) / name, Path(run_b) / name
        if not (a.exists() or b.exists()):
            continue
        if not (a.exists() and b.exists()):
            return {"equal": False, "max_abs": None, "note": f"{name} in one run only"}
        ta, tb = load_file(a), load_file(b)
        if ta.keys() != tb.keys():
            return {"equal": False, "max_abs": None, "note": f"{name}: other tensors"}
        for k in ta:
            equal &= torch.equal(ta[k], tb[k])
            largest = max(largest, (ta[k].float() - tb[k].float()).abs().max().item())
    return {"equal": equal, "max_abs": largest}


def checkpoint_generators(run: str) -> list[str]:
    import torch
    state = torch.load(Path(run) / "ckpt.pt", map_location="cpu", weights_only=False)
    return sorted(k for k in ("rng", "cuda_rng") if k in state)


# ---------------------------------------------------------------- the checks

@dataclasses.dataclass
class Check:
    """The run's state: the plan, its folders, the rows so far, and the current stage's deadline."""
    plan: Plan
    work: Path
    env: dict[str, str]
    squad_dev: Path | None
    carry_error: str | None
    rows: list[dict] = dataclasses.field(default_factory=list)
    details: dict = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)
    stage: str = ""
    deadline: float = 0.0
    limit: float = 0.0  # the stage's seconds: its box, or what is left of the budget
    n: int = 0

    @property
    def runs(self) -> Path:
        return self.work / "runs"

    def row(self, check: str, value: str, goal: str, result: str) -> None:
        value = value.replace("|", "/")  # a cell of a Markdown table
        self.rows.append({"stage": self.stage, "check": check, "value": value, "goal": goal, "result": result})
        print(f"  [{self.stage}] {check}: {value} (goal {goal}): {result}", flush=True)

    def goal(self, ok: bool) -> str:
        """A goal that only the GPU's sizes can meet: not judged in --smoke."""
        return NA if self.plan.smoke else (PASS if ok else FAIL)

    def _log(self, what: str) -> Path:
        self.n += 1
        return self.work / "logs" / f"{self.n:02d}-{self.stage}-{what}.log"

    def _finish(self, code: int | None, log: Path, what: str, t0: float, flags: str = "") -> float:
        """`what` ran (with `flags`): its seconds, recorded with its exit code; StageError unless it exited 0."""
        seconds = time.monotonic() - t0
        self.details.setdefault(self.stage, []).append({"command": what, "flags": flags, "exit": code,
                                                        "s": round(seconds, 1), "log": log.name})
        if code is None:
            raise StageError(f"{what}: out of the stage's time ({self.limit:.0f} s) after {seconds:.0f} s")
        if code:
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            raise StageError(f"{what}: exit {code}: {lines[-1][:300] if lines else '(no output)'} ({log.name})")
        return seconds

    def script(self, script: str, args: list, deterministic: bool = False, interrupt: int | None = None) -> float:
        """A project CLI in a forked child; its wall seconds, or StageError. An interrupted run must end as Ctrl-C
        ends it (exit code 130)."""
        args = [str(a) for a in args]
        log, t0 = self._log(Path(script).stem), time.monotonic()
        code = fork(as_script(script, args, deterministic, interrupt), log, self.child_env(), self.deadline)
        if interrupt and code == INTERRUPTED:
            code = 0
        run = args[args.index("--run-name") + 1] if "--run-name" in args else args[0]
        return self._finish(code, log, f"{script} ({run}" + (f", Ctrl-C in epoch {interrupt}" if interrupt else "")
                            + ")", t0, " ".join(args))

    def command(self, what: str, cmd: list[str]) -> float:
        """A program of its own (torchrun), killed with its process group at the deadline."""
        log, t0 = self._log(what), time.monotonic()
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, **self.child_env()})
            code = wait(proc.pid, self.deadline)
            proc.returncode = -9 if code is None else code  # reaped by wait(): Popen must not wait again
        return self._finish(code, log, what, t0, " ".join(cmd[1:]))

    def call(self, fn: Callable, *args):
        """fn(*args) in a forked child (it may use torch and CUDA); its JSON result, or StageError."""
        log, result, t0 = self._log(fn.__name__), self.work / "logs" / f"{fn.__name__}.json", time.monotonic()

        def target():
            result.write_text(json.dumps(fn(*args)))
        code = fork(target, log, self.child_env(), self.deadline)
        self._finish(code, log, fn.__name__, t0)
        return json.loads(result.read_text())

    def child_env(self) -> dict[str, str]:
        # --smoke's setup builds the tiny model from the SmolLM2 tokenizer in the usual cache; all else in the work's
        cache = {} if self.plan.smoke and self.stage == "setup" else {"LLAMA_HEADS_CACHE": str(self.work / "cache")}
        return {**self.env, **cache}

    @property
    def model(self) -> str:
        if "model" not in self.info:
            raise StageError("no model: the setup stage did not run or failed")
        return self.info["model"]

    def needs_carry(self) -> None:
        if self.carry_error and not self.plan.smoke:
            raise StageError(f"needs the carried files: {self.carry_error}")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def stage_setup(c: Check) -> None:
    c.info = c.call(device_info)
    what = f"{c.info['device']}" + (f" x{c.info['gpus']}, CUDA {c.info['cuda']}" if c.info["gpus"] else "")
    c.row("device", f"{what}; torch {c.info['torch']}, transformers {c.info['transformers']}, "
          f"Python {c.info['python']}", "a CUDA GPU" if not c.plan.smoke else "the CPU (--smoke)",
          PASS if c.plan.smoke or c.info["gpus"] else FAIL)
    if c.plan.smoke:
        c.info.update(c.call(tiny_llama, str(c.work / "tiny-llama")))
        return
    carried = f"unpacked, sha256 checked ({c.env.get('PYTHONPATH', '')})" if not c.carry_error else c.carry_error
    c.row("carried files (bench/transfer.py)", carried, "every part here and intact", FAIL if c.carry_error else PASS)
    if not c.carry_error:
        c.info.update(c.call(embedded_model))
        c.row("embedded SmolLM2 converted", f"{c.info['convert_s']:.1f} s from {c.info['gguf']}", "converts", PASS)


def cls_flags(c: Check, data: Path) -> list:
    return ["--model", c.model, "--data-dir", data, "--device", c.plan.device, "--runs-dir", c.runs, *c.plan.cls]


def sst2_data(c: Check) -> Path:
    """The bundled SST-2 sample (--smoke: its first 48 train and 16 dev rows)."""
    if not c.plan.smoke:
        return SAMPLES / "sst2"
    folder = c.work / "sst2"
    folder.mkdir(exist_ok=True)
    for name, rows in (("train.tsv", 48), ("dev.tsv", 16)):
        lines = (SAMPLES / "sst2" / name).read_text().split("\n")
        (folder / name).write_text("\n".join(lines[:rows + 1]) + "\n")
    return folder


def same_run(c: Check, what: str, straight: str, resumed: str) -> dict:
    """A row: the run trained in one go and the one trained in two pieces (--resume) are the same, bit for bit."""
    diff = c.call(weight_diff, str(c.runs / straight), str(c.runs / resumed))
    a, b = read_json(c.runs / straight / "metrics.json"), read_json(c.runs / resumed / "metrics.json")
    same_numbers = a["metrics"] == b["metrics"] and a["epochs"] == b["epochs"]
    value = ("weights and test/validation numbers identical" if diff["equal"] and same_numbers else
             f"weights {'identical' if diff['equal'] else 'differ (by up to %s)' % diff['max_abs']}, numbers "
             f"{'identical' if same_numbers else 'differ'}" + (f"; {diff['note']}" if diff.get("note") else ""))
    c.row(f"{what}: Ctrl-C in epoch 2, --resume = one run", value, "bit-identical",
          PASS if diff["equal"] and same_numbers else FAIL)
    return diff


def stage_cls(c: Check) -> None:
    c.needs_carry()
    data, export, e = sst2_data(c), c.work / "export-cls", c.plan.epochs
    flags = cls_flags(c, data)
    seconds = c.script("train_cls.py", flags + ["--epochs", e, "--run-name", "cls", "--export", export])
    m = read_json(c.runs / "cls" / "metrics.json")
    c.row("train_cls.py end to end", f"test accuracy {m['metrics']['before']['accuracy']:.3f} -> "
          f"{m['metrics']['after']['accuracy']:.3f}; {seconds:.0f} s (features {m['timing']['features_s']:.1f} s)",
          "runs", PASS)
    c.script("train_cls.py", flags + ["--epochs", e, "--run-name", "cls-resumed"], interrupt=2)
    c.script("train_cls.py", flags + ["--epochs", e, "--run-name", "cls-resumed", "--resume"])
    same_run(c, "cls", "cls", "cls-resumed")
    out = c.work / "cls-export.jsonl"
    c.script("predict.py", [export, "--file", data / "dev.tsv", "--out", out, "--device", c.plan.device])
    names, labels = m["label_names"], [str(x) for x in m["labels"]]
    gold = [ln.split("\t")[-1] for ln in (data / "dev.tsv").read_text().splitlines()[1:] if ln.strip()]
    predicted = [json.loads(ln)["label"] for ln in out.read_text().splitlines()]
    matrix = [[0] * len(names) for _ in names]
    for g, p in zip(gold, predicted):
        matrix[labels.index(g)][names.index(p)] += 1
    c.row("predict.py on the --export", f"confusion {matrix} vs the run's {m['confusion']} ({len(predicted)} "
          "sentences)", "= the run's", PASS if matrix == m["confusion"] and len(predicted) == len(gold) else FAIL)


def stage_qa(c: Check) -> None:
    c.needs_carry()
    export, e = c.work / "export-qa", c.plan.epochs
    flags = ["--model", c.model, "--train-file", SAMPLES / "squad_train.json", "--eval-file",
             SAMPLES / "squad_test.json", "--device", c.plan.device, "--runs-dir", c.runs, "--lora-rank", 8,
             "--lora-dropout", 0.1, *c.plan.qa]
    seconds = c.script("train_qa.py", flags + ["--epochs", e, "--run-name", "qa", "--export", export, "--merge"],
                       deterministic=True)
    m = read_json(c.runs / "qa" / "metrics.json")
    c.row("train_qa.py LoRA r=8, dropout 0.1", f"test F1 {m['metrics']['before']['f1']:.1f} -> "
          f"{m['metrics']['after']['f1']:.1f}; {seconds:.0f} s", "runs", PASS)
    c.script("train_qa.py", flags + ["--epochs", e, "--run-name", "qa-resumed"], deterministic=True, interrupt=2)
    c.script("train_qa.py", flags + ["--epochs", e, "--run-name", "qa-resumed", "--resume"], deterministic=True)
    diff = same_run(c, "qa (LoRA dropout)", "qa", "qa-resumed")
    generators = c.call(checkpoint_generators, str(c.runs / "qa-resumed"))
    if c.plan.smoke:
        c.row("CUDA generator restored by --resume", f"CPU run: ckpt.pt holds {generators}", "cuda_rng (GPU)", NA)
    else:
        c.row("CUDA generator restored by --resume", f"ckpt.pt holds {generators}; the dropout run resumed "
              f"{'bit-identical' if diff['equal'] else 'differently'}", "cuda_rng saved and restored",
              PASS if "cuda_rng" in generators and diff["equal"] else FAIL)
    out = c.work / "qa-export.jsonl"
    c.script("predict.py", [export, "--file", c.runs / "qa" / "test_data.json", "--out", out, "--device",
                            c.plan.device])
    preds, na_prob = read_json(c.runs / "qa" / "preds.json"), read_json(c.runs / "qa" / "na_prob.json")
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    same = sum(r["answer"] == preds.get(r["id"]) for r in rows)
    gap = max((abs(r["no_answer_probability"] - na_prob[r["id"]]) for r in rows), default=0.0)
    c.row("predict.py on the --export --merge", f"{same}/{len(preds)} answers as the run's preds.json; "
          f"no-answer probabilities within {gap:.1e}", ">= 95% the same",
          PASS if len(rows) == len(preds) and same >= 0.95 * len(preds) else FAIL)


def stage_torchrun(c: Check) -> None:
    c.needs_carry()
    data, e = sst2_data(c), c.plan.epochs
    flags = cls_flags(c, data) + ["--epochs", e]
    if not (c.runs / "cls" / "metrics.json").is_file():  # the one-process run to compare with (the cls stage's)
        c.script("train_cls.py", flags + ["--run-name", "cls"])
    ranks, backend = (2, "gloo") if c.plan.smoke else (c.info.get("gpus") or 1, "NCCL")
    seconds = c.command("torchrun", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                     f"--nproc_per_node={ranks}", "train_cls.py", *map(str, flags), "--run-name",
                                     "cls-torchrun"])
    one, many = read_json(c.runs / "cls" / "metrics.json"), read_json(c.runs / "cls-torchrun" / "metrics.json")
    n = one["split"]["test"]
    d_acc = abs(one["metrics"]["after"]["accuracy"] - many["metrics"]["after"]["accuracy"])
    d_loss = max(abs(a["val_loss"] - b["val_loss"]) for a, b in zip(one["epochs"], many["epochs"]))
    c.row(f"train_cls.py under torchrun, {ranks} rank(s), {backend}",
          f"test accuracy {many['metrics']['after']['accuracy']:.4f} vs {one['metrics']['after']['accuracy']:.4f} "
          f"in one process; validation losses within {d_loss:.1e}; {seconds:.0f} s", "= one process (within 1e-2)",
          PASS if d_loss <= 1e-2 and d_acc * n <= 1 + 0.01 * n else FAIL)
    if ranks == 1:
        c.row("torchrun with several ranks (NCCL collectives)", "untested: this machine has 1 GPU (one rank "
              "skips every collective)", "2+ GPUs", NA)


def stage_speed(c: Check) -> None:
    c.needs_carry()  # bench/gpu.py imports nltk (its peers read train_cls, whose flags read the SQuAD metrics)
    out = c.work / "gpu.json"
    c.script("bench/gpu.py", c.plan.gpu + ["--json", out])
    g = read_json(out)
    c.details["gpu"] = str(out)
    o, q = g["sst2_ours"], g["squad_ours"]
    floor = o["feature_s"] * o["mfu"] / 100  # the backbone's FLOPs at the measured ceiling
    shape = "tiny Llama, CPU" if c.plan.smoke else "Llama-3.2-1B shape"
    c.row(f"SST-2 3 epochs end to end ({shape})", f"{o['wall_s']:.1f} s; backbone floor {floor:.2f} s at "
          f"{g['ceiling_tflops']:,.0f} TFLOP/s (features {o['feature_s']:.1f} s, head {o['head_s']:.1f} s)",
          "<= 5 s (H200)", c.goal(o["wall_s"] <= 5))
    c.row("SQuAD pass MFU", f"{q['mfu']:.1f}% ({q['tok_s']:,.0f} tok/s, {q['tflops']:.0f} TFLOP/s)", ">= 55%",
          c.goal(q["mfu"] >= 55))
    n_windows = round(q["wall_s"] / q["s_per_example"])
    for task, ours, sides in (
            ("sst2", o["wall_s"], {"peer": g["sst2_peer"]["wall_s"], "careful peer": g["sst2_careful"]["wall_s"],
                                   "features once": g["sst2_features"]["wall_s"]}),
            ("squad pass", q["wall_s"], {"peer": g["squad_peer"]["s_per_example"] * n_windows,
                                         "careful peer": g["squad_careful"]["s_per_example"] * n_windows,
                                         "features once": g["squad_features"]["wall_s"]})):
        best = min(sides, key=sides.get)
        c.row(f"{task}: ours vs the best peer", f"{sides[best] / ours:.2f}x ({best} {sides[best]:.1f} s, ours "
              f"{ours:.1f} s; " + ", ".join(f"{k} {v:.1f} s" for k, v in sides.items() if k != best) + ")",
              "> 1x (ahead)", c.goal(sides[best] > ours))


def auc(na_prob: dict[str, float], has_answer: dict[str, bool]) -> float | None:
    """How well the no-answer probability ranks the unanswerable questions above the answerable ones (ties half)."""
    pos = sorted(na_prob[q] for q, h in has_answer.items() if not h)
    neg = sorted(na_prob[q] for q, h in has_answer.items() if h)
    if not pos or not neg:
        return None
    import bisect
    wins = sum(bisect.bisect_left(neg, p) + 0.5 * (bisect.bisect_right(neg, p) - bisect.bisect_left(neg, p))
               for p in pos)
    return wins / (len(pos) * len(neg))


def stage_learn(c: Check) -> None:
    c.needs_carry()
    if not (c.squad_dev and c.squad_dev.is_file()):
        raise StageError(f"no SQuAD 2.0 dev file ({c.squad_dev}): carry it (bench/transfer.py) or pass --squad-dev")
    flags = ["--model", c.model, "--eval-file", c.squad_dev, "--article-split", c.plan.learn_split, "--device",
             c.plan.device, "--runs-dir", c.runs, *c.plan.learn]
    seconds = c.script("train_qa.py", flags + ["--zero-shot", "--run-name", "learn-head"])
    head, test = read_json(c.runs / "learn-head" / "metrics.json"), read_json(c.runs / "learn-head" / "test_data.json")
    has_answer = {qa["id"]: bool(qa["answers"]) for article in test["data"] for p in article["paragraphs"]
                  for qa in p["qas"]}
    no_answer_f1 = 100 * sum(not h for h in has_answer.values()) / len(has_answer)
    c.row("SQuAD v2 dev: training / held-out articles", f"{head['split']['train']} train, "
          f"{head['split']['validation']} validation, {len(has_answer)} test questions; always-no-answer F1 "
          f"{no_answer_f1:.1f}", INFO, INFO)
    side(c, "frozen head", head["metrics"]["after"], has_answer, "learn-head", seconds)
    side(c, "zero-shot", head["metrics"]["zero_shot"], has_answer)  # its answers come with no no-answer probability
    try:
        seconds = c.script("train_qa.py", flags + c.plan.learn_lora + ["--run-name", "learn-lora"])
    except StageError:  # out of time, say: what the epochs it finished saw on validation is still worth a row
        log = c.runs / "learn-lora" / "log.jsonl"
        for row in (json.loads(ln) for ln in log.read_text().splitlines()) if log.is_file() else ():
            side(c, f"LoRA, unfinished: epoch {row['epoch']}, validation", row, {})
        raise
    after = read_json(c.runs / "learn-lora" / "metrics.json")["metrics"]["after"]
    side(c, f"adapted: LoRA r={c.plan.learn_lora[1]}, every projection", after, has_answer, "learn-lora", seconds)
    f1, has_f1 = after["f1"], after.get("HasAns_f1", 0.0)
    c.row("adapted F1 against always-no-answer", f"{f1:.1f} vs {no_answer_f1:.1f}", ">= always-no-answer + 5",
          c.goal(f1 >= no_answer_f1 + 5))
    c.row("adapted HasAns_f1", f"{has_f1:.1f}", ">= 30", c.goal(has_f1 >= 30))


def side(c: Check, name: str, numbers: dict, has_answer: dict[str, bool], run: str | None = None,
         seconds: float | None = None) -> None:
    """A row of the side-by-side: exact, F1, HasAns_f1, NoAns_f1 and, for a run's head, the no-answer AUC."""
    value = ", ".join(f"{k} {numbers[k]:.1f}" for k in ("exact", "f1", "HasAns_f1", "NoAns_f1") if k in numbers)
    if run:
        area = auc(read_json(c.runs / run / "na_prob.json"), has_answer)
        value += (f", no-answer AUC {area:.3f}" if area is not None else "") + f"; {seconds:.0f} s"
    c.row(f"SQuAD v2, held-out articles: {name}", value, INFO, INFO)


RUN = {"setup": stage_setup, "cls": stage_cls, "qa": stage_qa, "torchrun": stage_torchrun, "speed": stage_speed,
       "learn": stage_learn}


# ---------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="the same sequence on the CPU at tiny size")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {', '.join(STAGES)} (setup always runs)")
    p.add_argument("--budget", type=float, help="seconds for all stages (default 470: the 8 minutes the check "
                   "may take on a GPU; --smoke 600)")
    p.add_argument("--out", default=os.environ.get("OUT"), help="where the results go (default $OUT, if set)")
    p.add_argument("--work", help="the runs, caches and logs (default: a fresh temporary folder, removed at the end)")
    p.add_argument("--carry", type=Path, help="bench/transfer.py's parts (default .device-carry, if there)")
    p.add_argument("--squad-dev", type=Path, help="the SQuAD 2.0 dev JSON (default: the carried one, else "
                   "../shared/data/squad_v2/dev-v2.0.json)")
    p.add_argument("--box", action="append", default=[], metavar="STAGE=SECONDS",
                   help="another time box for a stage (repeatable), e.g. learn=300")
    args = p.parse_args(argv)
    args.boxes = {}
    for box in args.box:
        stage, _, seconds = box.partition("=")
        if stage not in STAGES or not seconds.replace(".", "", 1).isdigit():
            p.error(f"--box {box}: pass STAGE=SECONDS, STAGE one of {', '.join(STAGES)}")
        args.boxes[stage] = float(seconds)
    stages = [s for s in args.stages.split(",") if s]
    if unknown := sorted(set(stages) - set(STAGES)):
        p.error(f"--stages: unknown {', '.join(unknown)}; pick from {', '.join(STAGES)}")
    args.stages = ["setup", *(s for s in STAGES[1:] if s in stages)]
    args.budget = args.budget or (600 if args.smoke else 470)
    return args


def carried(args) -> tuple[dict[str, str], str | None]:
    """The environment the carried files give (bench/transfer.py unpack), or why there is none."""
    from bench import transfer
    carry = args.carry or transfer.CARRY
    if args.smoke and not args.carry:
        return {}, None
    try:
        return transfer.unpack(carry), None
    except (transfer.TransferError, OSError) as e:
        return {}, str(e)


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = SMOKE if args.smoke else GPU
    plan = dataclasses.replace(plan, boxes={**plan.boxes, **args.boxes})
    os.chdir(ROOT)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="device-check-"))
    if work.is_dir() and any(work.iterdir()):  # an earlier check's folder is replaced; anything else is kept
        if not (work / MARKER).is_file():
            print(f"error: --work {work}: holds other files; pass a new or empty folder, or an earlier check's",
                  file=sys.stderr)
            return 2
        shutil.rmtree(work)
    (work / "logs").mkdir(parents=True)
    (work / MARKER).touch()
    t_start = time.monotonic()
    env, carry_error = carried(args)
    # before the imports below: nltk reads NLTK_DATA and huggingface_hub HF_HUB_OFFLINE as they load; and should
    # anything ask whether there is a GPU here, NVML answers, which leaves CUDA unstarted for the forked children
    os.environ.update({**env, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false",
                       "PYTORCH_NVML_BASED_CUDA_CHECK": "1"})
    sys.path[1:1] = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    squad_dev = args.squad_dev or Path(env.get("SQUAD_DEV") or ROOT.parent / "shared" / "data" / "squad_v2" /
                                       "dev-v2.0.json")
    if plan.smoke and not args.squad_dev:
        squad_dev = SAMPLES / "squad_train.json"  # 4 articles: 3 to train on, 1 held out
    if plan.smoke:  # tiny models on a shared CPU: more threads only wait for each other
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    # every CLI's imports, once: the stages fork from here (no CUDA is touched in this process); WordNet too, which
    # each QA run's METEOR would load again (3-20 s)
    from bench import common
    try:
        import predict  # noqa: F401  (imports train_cls, train_qa and what they import)
        from bench import gpu  # noqa: F401
        from metrics import wordnet
    except ImportError as e:  # nltk not carried here: the stages that need it (all but setup) fail with a row
        print(f"note: {e}", flush=True)
    else:
        try:
            wordnet.load()
        except wordnet.WordNetMissing:
            pass  # each QA run says so itself
    import torch
    if torch.cuda.is_initialized():  # a forked child could not start it again
        raise SystemExit("error: an import started CUDA in bench/device_check.py's own process; its children fork")
    c = Check(plan, work, {"PYTHONPATH": os.environ.get("PYTHONPATH", "")} if env else {}, squad_dev, carry_error)
    print(f"device_check: {'--smoke, CPU, tiny sizes' if plan.smoke else 'GPU'}; stages {', '.join(args.stages)}; "
          f"budget {args.budget:.0f} s; work {work}", flush=True)
    end = t_start + args.budget
    for stage in args.stages:
        c.stage, left = stage, end - time.monotonic()
        if left < 5:
            c.row("stage", f"not run: the {args.budget:.0f} s budget is spent", "runs", "skipped")
            continue
        c.limit = min(plan.boxes[stage], left)
        t0 = time.monotonic()
        c.deadline = t0 + c.limit
        print(f"[{stage}] ({c.limit:.0f} s at most)", flush=True)
        try:
            RUN[stage](c)
        except Exception as e:  # a stage's failure (its command's, or this script's) is a row, not the end
            c.row("stage", f"failed: {e if isinstance(e, StageError) else repr(e)}", "runs", FAIL)
        c.details.setdefault("stage_s", {})[stage] = round(time.monotonic() - t0, 1)
    total = time.monotonic() - t_start
    results = {"smoke": plan.smoke, "info": c.info, "total_s": total, "rows": c.rows, "details": c.details,
               "budget_s": args.budget}
    table = common.table(c.rows, ["stage", "check", "value", "goal", "result"])
    (work / "device_check.json").write_text(json.dumps(results, indent=1) + "\n")
    if args.out:
        save(work, Path(args.out))
    failed = sum(r["result"] == FAIL for r in c.rows)
    print(f"\n## bench/device_check.py{' --smoke' if plan.smoke else ''} on {c.info.get('device', '?')}: "
          f"{total:.0f} s, {failed} FAIL")
    print(table)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def save(work: Path, out: Path) -> None:
    """device_check.json, gpu.json and the logs (one archive): 3 of the 8 files a device call brings back."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(work / "device_check.json", out / "device_check.json")
    if (work / "gpu.json").is_file():
        shutil.copy(work / "gpu.json", out / "gpu.json")
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        tar.add(work / "logs", arcname="logs")


if __name__ == "__main__":
    sys.exit(main())
