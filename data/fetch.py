"""Fetch public data files once into a cache, checked by sha256.

The cache lives in $LLAMA_HEADS_CACHE (default ~/.cache/llama-heads). Nothing is fetched when a
user passes local files; offline with an empty cache, a DataUnavailable error says which flag to use.
"""
import contextlib
import errno
import hashlib
import io
import os
import re
import secrets
import stat
import urllib.request
import zipfile
import zlib
from pathlib import Path

# name -> (url, member inside a zip or None, sha256 of the final file, flag that bypasses the fetch)
SOURCES = {
    "squad_v2_dev": ("https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v2.0.json", None,
                     "80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8", "--data/--eval-file"),
    "squad_v2_train": ("https://rajpurkar.github.io/SQuAD-explorer/dataset/train-v2.0.json", None,
                       "68dcfbb971bd3e96d5b46c7177b16c1a4e7d4bdef19fb204502738552dede002", "--train-file"),
    "sst2_train": ("https://dl.fbaipublicfiles.com/glue/data/SST-2.zip", "SST-2/train.tsv",
                   "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1", "--data-dir/--train-file"),
    "sst2_dev": ("https://dl.fbaipublicfiles.com/glue/data/SST-2.zip", "SST-2/dev.tsv",
                 "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0", "--data-dir/--eval-file"),
    # MRPC's public files (GLUE builds its MRPC from them). sha256: tensorflow/datasets,
    # tensorflow_datasets/url_checksums/glue.txt. Cached as .tsv: they are tab-separated.
    "mrpc_train": ("https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt", None,
                   "60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89", "--data-dir/--train-file"),
    "mrpc_test": ("https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_test.txt", None,
                  "a04e271090879aaba6423d65b94950c089298587d9c084bf9cd7439bd785f784", "--data-dir/--eval-file"),
}
# GLUE zips whose members nobody publishes checksums of: the zip's own sha256 is checked, then the member is read
# from the checked zip. The sha256s are tensorflow/datasets' (tensorflow_datasets/url_checksums/glue.txt), recorded
# for the same zips at their former firebasestorage URLs; chengchingwen/Transformers.jl (src/datasets/glue/*.jl)
# records the same values for these dl.fbaipublicfiles.com URLs (CoLA, QNLIv2, RTE, SST-2), and QQP-clean.zip's,
# which tensorflow/datasets lacks (it records the older QQP.zip). MNLI.zip: tensorflow/datasets' value, which other
# loaders record for this URL too.
GLUE_ZIPS = {
    "CoLA.zip": "f212fcd832b8f7b435fb991f101abf89f96b933ab400603bf198960dfc32cbff",
    "MNLI.zip": "e7c1d896d26ed6caf700110645df426cc2d8ebf02a5ab743d5a5c68ac1c83633",
    "QNLIv2.zip": "e634e78627a29adaecd4f955359b22bf5e70f2cbd93b493f2d624138a0c0e5f5",
    "QQP-clean.zip": "40e7c862c04eb26ee04b67fd900e76c45c6ba8e6d8fab4f8f1f8072a1a3fbae0",
    "RTE.zip": "6bf86de103ecd335f3441bd43574d23fef87ecc695977a63b82d5efb206556ee",
}
# name -> (zip, member, flag): fetched by fetch_file as SOURCES are
ZIP_MEMBERS = {
    "cola_train": ("CoLA.zip", "CoLA/train.tsv", "--data-dir/--train-file"),
    "cola_dev": ("CoLA.zip", "CoLA/dev.tsv", "--data-dir/--eval-file"),
    "mnli_train": ("MNLI.zip", "MNLI/train.tsv", "--data-dir/--train-file"),
    "mnli_dev_matched": ("MNLI.zip", "MNLI/dev_matched.tsv", "--data-dir/--eval-file"),
    "mnli_dev_mismatched": ("MNLI.zip", "MNLI/dev_mismatched.tsv", "--data-dir (dev_mismatched.tsv)"),
    "qnli_train": ("QNLIv2.zip", "QNLI/train.tsv", "--data-dir/--train-file"),
    "qnli_dev": ("QNLIv2.zip", "QNLI/dev.tsv", "--data-dir/--eval-file"),
    "qqp_train": ("QQP-clean.zip", "QQP/train.tsv", "--data-dir/--train-file"),
    "qqp_dev": ("QQP-clean.zip", "QQP/dev.tsv", "--data-dir/--eval-file"),
    "rte_train": ("RTE.zip", "RTE/train.tsv", "--data-dir/--train-file"),
    "rte_dev": ("RTE.zip", "RTE/dev.tsv", "--data-dir/--eval-file"),
}
GLUE_URL = "https://dl.fbaipublicfiles.com/glue/data/"


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


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def _download(name: str, url: str, sha: str, flag: str, timeout: float, member: str | None = None) -> bytes:
    """The file at url (or its zip's member), checked against sha: of the member if `member` is given, else of
    the download itself."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = response.read()
    except OSError as e:  # URLError, timeouts, DNS failures: all mean "offline" to the user
        raise DataUnavailable(
            f"cannot download {name} from {url} ({e.__class__.__name__}: {e}); "
            f"pass a local copy with {flag}") from None
    if member is not None:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            payload = archive.read(member)
    if sha256_of(payload) != sha:
        raise DataUnavailable(f"{url} returned a file whose sha256 is not {sha}; "
                              f"pass a trusted local copy with {flag}")
    return payload


def fetch_file(name: str, timeout: float = 30.0) -> Path:
    """Return the cached path of a known public file, downloading and checking it if needed."""
    if name in ZIP_MEMBERS:
        return _fetch_member(name, timeout)
    url, member, sha, flag = SOURCES[name]
    path = cache_dir() / name / (member or url).rsplit("/", 1)[-1].replace(".txt", ".tsv")
    if not (path.exists() and sha256_of(path.read_bytes()) == sha):
        write_atomic(path, _download(name, url, sha, flag, timeout, member))
    return path


def _fetch_member(name: str, timeout: float) -> Path:
    """A member of a GLUE zip: the zip is cached and checked by its sha256; the member is extracted from it once,
    and again whenever the extracted copy's CRC-32 differs from the checked zip's record of it."""
    zip_name, member, flag = ZIP_MEMBERS[name]
    archive = _checked_zip(zip_name, name, flag, timeout)
    path = cache_dir() / name / member.rsplit("/", 1)[-1]
    with zipfile.ZipFile(archive) as z:
        if not (path.exists() and zlib.crc32(path.read_bytes()) == z.getinfo(member).CRC):
            write_atomic(path, z.read(member))
    return path


_CHECKED: set[tuple] = set()  # (path, size, mtime, sha256) of zips hashed by this process


def _checked_zip(zip_name: str, name: str, flag: str, timeout: float) -> Path:
    """The cached GLUE zip, downloaded if missing; hashed once per process while its size and mtime stay the same
    (MNLI's 300 MB zip holds the three files a run reads)."""
    sha, archive = GLUE_ZIPS[zip_name], cache_dir() / "glue" / zip_name
    stamp = lambda: (str(archive), archive.stat().st_size, archive.stat().st_mtime_ns, sha)  # noqa: E731
    if not (archive.exists() and (stamp() in _CHECKED or sha256_of(archive.read_bytes()) == sha)):
        write_atomic(archive, _download(name, GLUE_URL + zip_name, sha, flag, timeout))
    _CHECKED.add(stamp())
    return archive
