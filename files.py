"""Files: the project's one way to write them (atomic, safe targets, one-line errors) and its cache folder.

Every file the scripts write goes through write_atomic / atomic_path / write_safetensors: readers see the old file
or the new one, never half of it, and a failed write is a WriteError naming the path and the fix. The cache lives in
$LLAMA_HEADS_CACHE (default ~/.cache/llama-heads).
"""
import contextlib
import errno
import os
import re
import secrets
import stat
from pathlib import Path


class DataUnavailable(RuntimeError):
    """The file is neither cached nor downloadable; the message says how to pass a local copy."""


# what to do about a write that failed, by errno
_SPACE, _ALLOWED, _NOT_A_FOLDER = ("free space on that disk, or write elsewhere", "write where you may, or fix the "
                                   "permissions", "a folder on the path is a file: write elsewhere")
WRITE_FIXES = {errno.ENOSPC: _SPACE, errno.EDQUOT: _SPACE, errno.EROFS: "write elsewhere", errno.EACCES: _ALLOWED,
               errno.EPERM: _ALLOWED, errno.ENOTDIR: _NOT_A_FOLDER, errno.EEXIST: _NOT_A_FOLDER}


class WriteError(OSError):
    """A file or folder that could not be written (no space, read-only, permission denied, a file where a folder
    must be): its path, the cause and the fix in one line. Nothing half-written is left behind."""

    def __str__(self) -> str:
        fix = WRITE_FIXES.get(self.errno)
        return f"cannot write {self.filename} ({self.strerror})" + (f"; {fix}" if fix else "")


def write_error(e: OSError, path) -> WriteError:
    """`e` (the OSError of writing `path`, or of its temp file, which is gone then) as a WriteError naming `path`."""
    return e if isinstance(e, WriteError) else WriteError(e.errno, e.strerror or str(e), str(path))


def os_error(e: Exception) -> OSError | None:
    """The OSError behind a failed write: `e` itself, or the one safetensors' errors name by number (its Rust I/O
    errors are no OSErrors); None for any other failure."""
    if isinstance(e, OSError):
        return e
    if type(e).__name__ == "SafetensorError" and (found := re.search(r"os error (\d+)|Os \{ code: (\d+)", str(e))):
        number = int(found[1] or found[2])
        return OSError(number, os.strerror(number))
    return None


def cache_dir() -> Path:
    """$LLAMA_HEADS_CACHE or ~/.cache/llama-heads; one that is (or lies under) a file is a DataUnavailable line."""
    path = Path(os.environ.get("LLAMA_HEADS_CACHE", Path.home() / ".cache" / "llama-heads"))
    there = next(p for p in (path, *path.parents) if p.exists())  # what is made of it when the cache is written
    if not there.is_dir():
        raise DataUnavailable(f"the cache {path} (LLAMA_HEADS_CACHE): {there} is a file, not a folder; set "
                              "LLAMA_HEADS_CACHE to a folder (it is made if missing)")
    return path


def _write_target(path: Path) -> tuple[Path, os.stat_result | None, bool]:
    """(the file that writing `path` changes, its stat or None if it does not exist yet, whether
    to replace it atomically). Symlinks are followed to their final target (created if dangling);
    a directory is refused; a FIFO, device or other non-regular file is written in place."""
    try:
        st = os.stat(path)  # follows symlinks; ELOOP and the like propagate as they are
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(path))
    if st is not None and not stat.S_ISREG(st.st_mode):
        return path, st, False
    if os.path.islink(path):  # the link stays; its final target is what gets replaced (or created)
        path = Path(os.path.realpath(path))
        if os.path.islink(path):  # realpath gives up on a loop and returns a link
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
    return path, st, True


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Context manager yielding the path to write instead of `path`; when the block ends without
    an exception, that file replaces `path` atomically, so readers see the old file or the new
    one, never half of it, even after a crash.

    - regular file (or new path): a temp file in the same folder, fsynced and os.replace'd onto the
      target, the folder fsynced after; it ends with the old file's permission bits, or a new file's
      (0666 less the umask, as open() gives), whatever the writer did to it; on any failure,
      including KeyboardInterrupt, the temp file is removed.
    - symlink: written THROUGH: its final target is replaced (or created, if dangling); the link
      itself is kept.
    - existing FIFO, character/block device or socket: yields `path` itself, written directly
      (no temp file, no rename: replacing /dev/null would be a disaster; a FIFO blocks until
      someone reads it, as any writer does).
    - directory: a WriteError (EISDIR) naming it, before any temp file exists.
    Missing parent folders of `path` are created. Every OSError (no space, read-only, permission denied, a file
    where a folder must be), the writer's own included, ends as a WriteError naming `path`, the temp file removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        target, st, atomic = _write_target(path)
    except OSError as e:
        raise write_error(e, path) from None
    if not atomic:
        try:
            yield target
        except OSError as e:
            raise write_error(e, path) from None
        return
    fd, tmp = -1, None
    try:
        for _ in range(100):
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(errno.EEXIST, "no free temp file name", str(tmp))
    except OSError as e:
        raise write_error(e, path) from None
    try:
        if st is not None:
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
        mode = stat.S_IMODE(os.fstat(fd).st_mode)  # read back: the umask's effect, with no os.umask() race
        os.close(fd)
        fd = -1
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        os.fchmod(fd, mode)  # again: a writer may replace the temp file (newer safetensors write a new 0600 file)
        os.fsync(fd)  # the data reaches the disk before the name points at it
        os.close(fd)
        fd = -1
        os.replace(tmp, target)
    except BaseException as e:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError):  # the writer's or ours: no space, read-only
            raise write_error(e, path) from None
        raise
    with contextlib.suppress(OSError):  # the rename itself reaches the disk (not on every platform)
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def write_atomic(path: str | Path, data: bytes | bytearray | memoryview | str) -> None:
    """Write `data` (str as UTF-8) to `path` so that a crash never leaves a half-written file;
    what "atomic" means for links, devices, FIFOs and folders: see atomic_path. The project's
    one way to write a file. Safetensors: write_atomic(path, safetensors.torch.save(tensors)),
    or write_safetensors, which does not hold a second copy of the tensors in memory."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"write_atomic writes str or bytes, not {type(data).__name__}")
    with atomic_path(path) as target, open(target, "wb") as f:
        f.write(data)


def write_safetensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """safetensors.torch.save_file, atomically as write_atomic (needs torch and safetensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file
    with atomic_path(path) as target:
        try:
            save_file(tensors, str(target), metadata=metadata)
        except SafetensorError as e:  # as an OSError: atomic_path makes it a WriteError
            if (failed := os_error(e)) is None:
                raise
            raise failed from None
