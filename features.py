"""Backbone passes over length-sorted batches, and the on-disk cache that makes a frozen backbone run once.

Features are keyed by what determines them (the model's weights, dtype, the token sequences, and what is kept
of each pass), computed in chunks that are saved as they finish (an interrupted extraction resumes), split
between torchrun ranks, and reloaded on every later run."""
import hashlib
import json
import shutil
import sys
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError
from safetensors.torch import load_file

import distributed
from batching import length_batches, pad_batch
from files import WriteError, cache_dir, write_safetensors

Pick = Callable[[list[int], torch.Tensor, torch.Tensor], list[torch.Tensor]]  # (indices, hidden, mask) -> per item


def backbone_passes(backbone, seqs: list[list[int]], pad_id: int, max_tokens: int, desc: str,
                    order: list[list[int]] | None = None) -> Iterable[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Yield (indices, last hidden state, mask) per length-sorted batch, with a tok/s progress bar.

    The batches are right-padded and the model is causal, so no real token ever attends to a pad: the
    backbone runs without an attention mask, which lets SDPA take its fused causal (flash) kernel."""
    device = next(backbone.parameters()).device
    batches = order if order is not None else length_batches([len(s) for s in seqs], max_tokens, max_batch=4096)
    total = sum(len(seqs[i]) for b in batches for i in b)
    start = time.perf_counter()
    with distributed.progress(total=total, desc=desc, unit="tok", unit_scale=True, dynamic_ncols=True) as bar:
        for batch in batches:
            ids, mask = pad_batch([seqs[i] for i in batch], pad_id, device)
            with torch.inference_mode():
                hidden = backbone(input_ids=ids).last_hidden_state
            yield batch, hidden, mask
            bar.update(sum(len(seqs[i]) for i in batch))  # counted on the host: no device sync
            bar.set_postfix(tok_s=f"{bar.n / (time.perf_counter() - start):,.0f}")


_COMPILED: "weakref.WeakKeyDictionary[torch.nn.Module, Callable]" = weakref.WeakKeyDictionary()


# Tokens from which compiling the frozen pass pays for the compile (measured, bench/RESULTS.md). CPU (2 cores,
# SmolLM2-135M): ~280 s to compile, then 2,954 instead of 2,602 tok/s: even at ~6M tokens. CUDA (H200, Llama-3.2-1B
# shape): ~50 s to compile, then 243k-247k instead of 154k-187k tok/s: even at 21M-38M (SQuAD v2 train: ~60M).
COMPILE_PAYS_FROM = {"cpu": 8_000_000, "cuda": 30_000_000}


def compile_pays(tokens: int, device: torch.device) -> bool:
    """--compile auto: whether a pass over this many tokens on this device wins back its compile time."""
    return tokens >= COMPILE_PAYS_FROM.get(device.type, float("inf"))


def feature_module(backbone: torch.nn.Module, compile: bool) -> Callable:
    """The frozen backbone as feature passes run it: with compile, compiled once per process for dynamic shapes
    (batches differ in size and length). The module itself stays as it is, so its weights keep their names."""
    if not compile:
        return backbone
    if backbone not in _COMPILED:
        _COMPILED[backbone] = torch.compile(backbone, dynamic=True)
    return _COMPILED[backbone]


def backbone_features(backbone, seqs: list[list[int]], pad_id: int, max_tokens: int, desc: str, pick: Pick
                      ) -> Iterable[tuple[list[int], list[torch.Tensor]]]:
    """Yield (indices, per-item host tensors), where pick(indices, hidden, mask) selects what to keep of a batch.

    On CUDA each batch's picks travel to pinned host memory asynchronously and are yielded one batch late, after
    the next batch's forward is queued: the copy overlaps compute and the GPU never waits for the host."""
    pending = None
    for batch, hidden, mask in backbone_passes(backbone, seqs, pad_id, max_tokens, desc):
        picked = pick(batch, hidden, mask)
        sizes = [len(t) for t in picked] if picked[0].dim() > 1 else None
        packed = torch.cat(picked) if sizes else torch.stack(picked)  # a fresh tensor: hidden can be freed
        if packed.is_cuda:
            host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
            host.copy_(packed, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        else:
            host, done = packed, None
        if pending:
            yield _unpack(*pending)
        pending = batch, host, sizes, done
    if pending:
        yield _unpack(*pending)


def _unpack(batch, host, sizes, done):
    if done is not None:
        done.synchronize()
    return batch, list(host.split(sizes) if sizes else host.unbind(0))


def cache_path(model_path: str, dtype: torch.dtype, seqs: list[list[int]], **more) -> Path:
    """Where the features of these token sequences live: keyed by the model's weights, the compute dtype, the data
    and `more` (what each pass keeps: the pooling, the window starts, the trunk depth)."""
    key = hashlib.sha256(json.dumps(dict(model=model_path, weights=model_fingerprint(model_path), dtype=str(dtype),
                                         data=data_fingerprint(seqs), **more), sort_keys=True, default=str).encode())
    return cache_dir() / "features" / f"{key.hexdigest()[:24]}.safetensors"


def model_fingerprint(path: str) -> str:
    """Identity of a model's weights. A Hub id: the commit of the snapshot in the Hub cache (what from_pretrained
    loaded: a new revision of the repo is another model), or the id alone before it is downloaded. A local folder: a
    digest of its files' contents, whole for files up to 64 MiB, else the size and 256 slices spread over the file,
    so a copied or re-converted folder keeps its identity and other weights get another."""
    folder = Path(path)
    if not folder.is_dir():
        try:
            snapshot = try_to_load_from_cache(path, "config.json")
        except ValueError:  # not a Hub id either: loading it says so
            return path
        return f"{path}@{Path(snapshot).parent.name}" if isinstance(snapshot, str) else path
    h = hashlib.sha256()
    for f in sorted(f for f in folder.iterdir() if f.suffix in (".safetensors", ".json", ".bin")):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}|".encode())
        with f.open("rb") as fh:
            if size <= 64 << 20:
                h.update(fh.read())
                continue
            for i in range(256):
                fh.seek(i * (size - 4096) // 255)
                h.update(fh.read(4096))
    return "sha256:" + h.hexdigest()[:32]


def data_fingerprint(seqs: list[list[int]]) -> str:
    h = hashlib.sha256()
    for s in seqs:
        h.update(np.asarray(s, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()


def cached_features(path: Path | None, seqs: list[list[int]], compute: Callable[[list[int]], Iterable],
                    chunk: int = 4096) -> list[torch.Tensor]:
    """Features per sequence, computed once and kept in `path` (safetensors); with path None computed the same way
    (same chunks, same batches, so the same numbers) and kept nowhere: predict.py's one-off inputs.

    Work is done in length-sorted chunks, each saved as it finishes, so an interrupted extraction resumes where it
    stopped. `compute(indices)` yields (indices, per-item feature tensors). Under torchrun every rank computes its
    share of each chunk (every world-th sequence) and the ranks exchange their shares through the process group,
    not the disk: ranks on machines without a shared filesystem work the same. Each machine's disk cache is its
    own speed-up: local rank 0 of every node writes the merged file. A file that does not load, or holds another
    number of items, is said so and computed again.
    """
    mine = _load(path, len(seqs)) if path else None
    if distributed.all_ranks(mine is not None):
        return mine
    parts = path.with_suffix(".parts") if path else None
    rank, world = distributed.rank(), distributed.world()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    feats: list[torch.Tensor | None] = [None] * len(seqs)
    for c, lo in enumerate(range(0, len(order), chunk)):
        idx = order[lo:lo + chunk][rank::world]
        part = parts / f"{c:05d}.{rank}-of-{world}.safetensors" if parts else None
        if mine is not None:  # this machine has the whole file; another one has not
            got = [mine[i] for i in idx]
        elif idx and (got := _load(part, len(idx)) if part else None) is None:
            found = {}
            for batch, batch_feats in compute(idx):
                found.update(zip(batch, batch_feats))
            got = [found[i] for i in idx]
            if part and not kept(part, got):
                path = parts = None  # the rest stays in memory too
        for share, items in exchange(idx, got if idx else []):
            for i, f in zip(share, items):
                feats[i] = f
    if path and distributed.local_rank() == 0 and mine is None:
        kept(path, feats)
    distributed.barrier()  # every rank of this node is done with its parts before they go
    if parts and distributed.local_rank() == 0:
        shutil.rmtree(parts, ignore_errors=True)  # another process filling the same entry may have removed it
    return feats


def exchange(idx: list[int], items: list[torch.Tensor]) -> list[tuple[list[int], list[torch.Tensor]]]:
    """Every rank's (indices, items) share of a chunk, on every rank: the items travel packed as one tensor
    (flatten), so a rank holds little more than the features themselves while they arrive."""
    if distributed.world() == 1:
        return [(idx, items)]
    packed = flatten(items) if items else {"flat": torch.empty(0), "lengths": torch.empty(0, dtype=torch.long)}
    shares = distributed.gather_objects((idx, packed["lengths"].tolist()))
    flats = distributed.gather_tensors(packed["flat"])
    return [(share, unflatten({"flat": flat, "lengths": torch.tensor(lengths)}) if share else [])
            for (share, lengths), flat in zip(shares, flats)]


def kept(path: Path, items: list[torch.Tensor]) -> bool:
    """Whether `items` were saved in `path`; a cache that cannot be written (a full disk, read-only) costs only the
    speed-up: said in one line, and the features computed stay in memory."""
    try:
        write_safetensors(path, flatten(items))
        return True
    except WriteError as e:
        print(f"feature cache: {e}; the features are kept in memory only", file=sys.stderr)
        return False


def _load(path: Path, n: int) -> list[torch.Tensor] | None:
    """The items saved in `path`, or None if it is missing; a corrupt file, or one of another size, is removed
    with a line saying so (it is then recomputed)."""
    if not path.exists():
        return None
    try:
        items = unflatten(load_file(path))
        if len(items) == n:
            return items
        why = f"holds {len(items)} items, not {n}"
    except (SafetensorError, OSError, KeyError, RuntimeError) as e:
        why = f"does not load ({type(e).__name__})"
    print(f"feature cache {path} {why}: removed, computing it again", file=sys.stderr)
    path.unlink(missing_ok=True)
    return None


def flatten(items: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    # Variable-length items (QA windows) and fixed ones (pooled vectors) share one flat layout.
    shapes = torch.tensor([t.shape[0] if t.dim() > 1 else 0 for t in items])
    flat = torch.cat([t.reshape(-1, t.shape[-1]) for t in items]).contiguous()
    return {"flat": flat, "lengths": shapes}


def unflatten(d: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    lengths = d["lengths"].tolist()
    if not any(lengths):
        return list(d["flat"].unbind(0))
    return list(d["flat"].split(lengths))
