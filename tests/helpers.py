"""Helpers the test modules share: running a script as a user would, a crash at a chosen epoch, a run's log."""
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest

import loop

ROOT = Path(__file__).resolve().parents[1]


def cut(src: Path, dst: Path, rows: int) -> Path:
    """The header and the first `rows` rows of a TSV."""
    dst.write_text("\n".join(src.read_text().split("\n")[:rows + 1]) + "\n")
    return dst


def data_dir_cut(folder: Path, sample: str, train_rows: int, dev_rows: int) -> Path:
    """A --data-dir (GLUE layout) holding the first rows of data/samples/<sample>'s train.tsv and dev.tsv."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.tsv", train_rows), ("dev.tsv", dev_rows)):
        cut(ROOT / "data" / "samples" / sample / name, folder / name, rows)
    return folder


def run_script(script: str, *flags, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def assert_one_line_error(out: subprocess.CompletedProcess, *words) -> None:
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    for w in words:
        assert w in out.stderr, out.stderr


def log_rows(run: Path, steps: bool = True) -> list[dict]:
    """log.jsonl's rows (with steps: the per-step rows too), less the per-step throughput, which timing changes."""
    rows = [{k: v for k, v in json.loads(line).items() if k != "examples_per_s"}
            for line in (run / "log.jsonl").read_text().splitlines()]
    return rows if steps else [r for r in rows if "step" not in r]


@contextmanager
def crash_in_epoch(epoch: int):
    """Inside the block, loop.fit raises right after logging `epoch`, before its checkpoint (a Ctrl-C
    there); the block must end in that crash."""
    print_row = loop.print_row

    def crash(row, header):
        if row["epoch"] == epoch:
            raise RuntimeError("simulated crash")
        print_row(row, header)
    with mock.patch.object(loop, "print_row", crash), pytest.raises(RuntimeError, match="simulated crash"):
        yield


class StubApi:
    """Records what a real HfApi would have been asked; optionally fails like the Hub."""
    def __init__(self, error: Exception | None = None):
        self.error, self.calls = error, {}

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False):
        if self.error:
            raise self.error
        self.calls["create_repo"] = dict(repo_id=repo_id, private=private, exist_ok=exist_ok)
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, operations, *, commit_message, token=None):
        def read(op):
            with op.as_file() as f:
                return f.read()
        self.calls["files"] = {op.path_in_repo: read(op) for op in operations}
        self.calls["uploaded"] = sorted(self.calls["files"])
        self.calls["message"] = commit_message

    def card(self) -> str:
        return self.calls["files"]["README.md"].decode()


class Mounts:
    """Full disks and read-only folders, for real: a small tmpfs, filled up; a read-only bind mount. Mounting needs
    root (CI runs as root); elsewhere the test is skipped, saying why. undo() unmounts, latest first."""

    def __init__(self):
        self.done: list[Path] = []

    def _mount(self, folder: Path, *options) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            pytest.skip("a full disk or a read-only folder is made with mount, which needs root (CI runs as root)")
        out = subprocess.run(["mount", *options, str(folder)], capture_output=True, text=True)
        if out.returncode:
            pytest.skip(f"mount is not permitted here ({out.stderr.strip()})")
        self.done.append(folder)
        return folder

    def tmpfs(self, folder: Path, size: str = "64k") -> Path:
        """A disk of `size` at `folder`."""
        return self._mount(folder, "-t", "tmpfs", "-o", f"size={size}", "tmpfs")

    def full(self, folder: Path, size: str = "64k") -> Path:
        return fill(self.tmpfs(folder, size))

    def read_only(self, folder: Path) -> Path:
        """`folder` (as it is) mounted read-only onto itself."""
        self._mount(folder, "--bind", str(folder))
        out = subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True, text=True)
        if out.returncode:
            pytest.skip(f"a read-only remount is not permitted here ({out.stderr.strip()})")
        return folder

    def undo(self) -> None:
        for folder in reversed(self.done):
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        self.done.clear()


def fill(folder: Path) -> Path:
    """The disk `folder` is on, filled up by a file named .filler in it."""
    fd = os.open(folder / ".filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        return folder
    finally:
        os.close(fd)
