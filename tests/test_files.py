"""files.write_atomic, the project's one way to write a file: atomic on regular files, through
symlinks, in place on FIFOs and devices, refused on folders, never a temp file left behind; and
`python -m metrics.squad --out` keeps the scores on stdout when the file cannot be written."""
import errno
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import files
from files import WriteError, atomic_path, write_atomic, write_safetensors

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "tests" / "fixtures" / "metric-cases" / "dev-first300"


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_new_and_replaced_regular_files(tmp_path):
    path = tmp_path / "sub" / "dir" / "out.json"  # missing folders are created
    write_atomic(path, "héllo\n")
    assert path.read_bytes() == "héllo\n".encode("utf-8")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # as open() would create it
    path.chmod(0o640)
    inode = path.stat().st_ino
    write_atomic(path, b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"
    assert path.stat().st_ino != inode  # a new file renamed over the old one, not rewritten in place
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # permission bits kept
    write_atomic(str(path), bytearray(b"ba"))
    write_atomic(path, memoryview(b"mv"))
    assert path.read_bytes() == b"mv"
    with pytest.raises(TypeError, match="str or bytes, not dict"):
        write_atomic(path, {"a": 1})
    assert names(path.parent) == ["out.json"]


def test_new_files_get_opens_mode_and_old_files_keep_theirs(tmp_path):
    """A writer that replaces the temp file with a 0600 one (safetensors' save_file does, in newer releases) still
    gives a new file open()'s mode and keeps an old file's."""
    umask = os.umask(0)
    os.umask(umask)

    def replacing_writer(tmp):
        tmp.unlink()
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    path = tmp_path / "head.safetensors"
    for old_mode in (None, 0o640, 0o604):
        if old_mode is not None:
            path.chmod(old_mode)
        with atomic_path(path) as tmp:
            replacing_writer(tmp)
        assert stat.S_IMODE(path.stat().st_mode) == (old_mode or 0o666 & ~umask)
    path.unlink()
    torch = pytest.importorskip("torch")
    write_safetensors(path, {"w": torch.zeros(2)})
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    path.chmod(0o640)
    write_safetensors(path, {"w": torch.ones(2)})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and names(tmp_path) == ["head.safetensors"]


def test_symlink_is_written_through_and_kept(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "scores.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(Path("real") / "scores.json")  # relative, as users make them
    chain = tmp_path / "chain.json"
    chain.symlink_to(link)
    write_atomic(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(Path("real") / "scores.json")
    assert target.read_text() == "new" and not target.is_symlink()
    write_atomic(chain, "via two links")
    assert chain.is_symlink() and link.is_symlink() and target.read_text() == "via two links"
    assert names(tmp_path) == ["chain.json", "link.json", "real"] and names(tmp_path / "real") == ["scores.json"]


def test_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "made.json")
    write_atomic(link, "x")
    assert link.is_symlink() and (tmp_path / "made.json").read_text() == "x"


def test_symlink_loop_is_an_error_without_temp_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(OSError) as info:
        write_atomic(a, "x")
    assert info.value.errno == errno.ELOOP
    assert names(tmp_path) == ["a", "b"] and a.is_symlink() and b.is_symlink()


@pytest.mark.parametrize("via_link", [False, True])
def test_directory_is_refused_without_temp_files(tmp_path, via_link):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "inside").write_text("keep")
    target = folder
    if via_link:
        target = tmp_path / "link"
        target.symlink_to(folder)
    with pytest.raises(WriteError, match="is a directory, not a file") as info:
        write_atomic(target, "x")
    assert info.value.filename == str(target) and info.value.errno == errno.EISDIR
    assert names(tmp_path) == (["folder", "link"] if via_link else ["folder"])
    assert names(folder) == ["inside"]


def test_fifo_is_written_in_place(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_atomic(fifo, "through the pipe")
    reader.join(timeout=30)
    assert got == [b"through the pipe"]
    assert stat.S_ISFIFO(fifo.stat().st_mode) and names(tmp_path) == ["pipe"]


def null_device(tmp_path) -> Path:
    """A character device to write to: our own /dev/null node where we may make one (as root), else
    /dev/null itself (a user who cannot mknod cannot replace /dev/null either)."""
    node = tmp_path / "null"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.stat("/dev/null").st_rdev)
        return node
    except (PermissionError, OSError):
        return Path("/dev/null")


def test_character_device_is_written_in_place(tmp_path):
    device = null_device(tmp_path)
    before = device.stat()
    write_atomic(device, "discarded")
    after = device.stat()
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert [p for p in device.parent.iterdir() if p.name.startswith(f".{device.name}.")] == []


def test_any_failure_removes_the_temp_file_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    path.write_text("old")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(files.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old" and names(tmp_path) == ["out.json"]
    for error in (RuntimeError("writer failed"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with atomic_path(path) as tmp:
                tmp.write_text("half")
                raise error
        assert path.read_text() == "old" and names(tmp_path) == ["out.json"]


def test_unwritable_place_is_an_oserror_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        write_atomic(blocker / "out.json", "x")
    assert names(tmp_path) == ["file"]


def test_safetensors_both_ways(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save
    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(2, dtype=torch.bfloat16)}
    write_atomic(tmp_path / "bytes.safetensors", save(tensors, metadata={"k": "v"}))  # bytes: nothing else needed
    write_safetensors(tmp_path / "file.safetensors", tensors, metadata={"k": "v"})  # no second copy in memory
    for name in ("bytes.safetensors", "file.safetensors"):
        loaded = load_file(tmp_path / name)
        assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert (tmp_path / "bytes.safetensors").read_bytes() == (tmp_path / "file.safetensors").read_bytes()
    assert names(tmp_path) == ["bytes.safetensors", "file.safetensors"]


# --- metrics.squad --out: a failed write loses nothing ----------------------------------------------

def run_cli(out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metrics.squad", str(CASE / "full" / "preds.json"),
                           "--data", str(CASE / "data.json"), "--na-prob-file", str(CASE / "full" / "na_prob.json"),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_out_failures_still_print_the_scores(tmp_path):
    expected = json.loads((CASE / "full" / "expected.json").read_text())
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    for out, reason in ((tmp_path / "folder", "is a directory, not a file"), (tmp_path / "file" / "scores.json", "")):
        run = run_cli(out)
        assert run.returncode == 2
        assert json.loads(run.stdout)["squad_v2"]["exact"] == pytest.approx(expected["squad_v2"]["exact"], abs=1e-9)
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: cannot write {out}: ") and reason in last and "Traceback" not in run.stderr
    assert names(tmp_path) == ["file", "folder"] and names(tmp_path / "folder") == []
