"""Fetch public data files once into a cache, checked by sha256.

The cache is files.cache_dir() ($LLAMA_HEADS_CACHE, default ~/.cache/llama-heads). Nothing is fetched when a
user passes local files; offline with an empty cache, a DataUnavailable error says which flag to use.
"""
import hashlib
import io
import urllib.request
import zipfile
import zlib
from pathlib import Path

from files import DataUnavailable, cache_dir, write_atomic

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


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
