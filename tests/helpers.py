"""Helpers the test modules share: running a script as a user would, and a crash at a chosen epoch."""
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest

import loop

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *flags, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def assert_one_line_error(out: subprocess.CompletedProcess, *words) -> None:
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    for w in words:
        assert w in out.stderr, out.stderr


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
