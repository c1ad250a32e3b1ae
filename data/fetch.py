"""Fetch public data files once into a cache, checked by sha256.

The cache lives in $LLAMA_HEADS_CACHE (default ~/.cache/llama-heads). Nothing is fetched when a
user passes local files; offline with an empty cache, a DataUnavailable error says which flag to use.
"""
import hashlib
import io
import os
import urllib.request
import zipfile
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
}


class DataUnavailable(RuntimeError):
    """The file is neither cached nor downloadable; the message says how to pass a local copy."""


def cache_dir() -> Path:
    return Path(os.environ.get("LLAMA_HEADS_CACHE", Path.home() / ".cache" / "llama-heads"))


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write via a temp file and rename, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def fetch_file(name: str, timeout: float = 30.0) -> Path:
    """Return the cached path of a known public file, downloading and checking it if needed."""
    url, member, sha, flag = SOURCES[name]
    path = cache_dir() / name / (member or url).rsplit("/", 1)[-1]
    if path.exists() and sha256_of(path.read_bytes()) == sha:
        return path
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
    write_atomic(path, payload)
    return path
