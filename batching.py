"""Batches that pad little: length-sorted index batches, seeded shuffles, and right padding."""
import torch


def length_batches(lengths: list[int], max_tokens: int, max_batch: int = 512,
                   max_padding: float = 0.05) -> list[list[int]]:
    """Group indices by length: a padded batch costs at most max_tokens, and at most max_padding of it
    is padding (a batch closes early rather than mixing short and long items)."""
    batches, current, longest, real = [], [], 0, 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        grown = max(longest, lengths[i])
        padded = grown * (len(current) + 1)
        if current and (padded > max_tokens or len(current) == max_batch
                        or padded - real - lengths[i] > max_padding * padded):
            batches.append(current)
            current, grown, real = [], lengths[i], 0
        current.append(i)
        longest, real = grown, real + lengths[i]
    if current:
        batches.append(current)
    return batches


def shuffled(batches: list, seed: int) -> list:
    """The same batches in a seeded order: length-sorted batches stay tight, yet every epoch differs."""
    perm = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed))
    return [batches[i] for i in perm]


def pad_rows(items: list[torch.Tensor], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item (n_i, H) tensors (cached states or features) right-padded with zeros into (B, T, H) on `device`,
    and their (B, T) mask, as pad_batch gives for token ids."""
    padded = torch.nn.utils.rnn.pad_sequence([t.to(device) for t in items], batch_first=True)
    lengths = torch.tensor([len(t) for t in items], device=device)
    return padded, (torch.arange(padded.shape[1], device=device)[None] < lengths[:, None]).long()


def pad_batch(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and their mask, built in a few vectorised ops (not one copy per row)."""
    lengths = torch.tensor([len(s) for s in seqs])
    mask = (torch.arange(int(lengths.max()))[None] < lengths[:, None]).long()
    ids = torch.full(mask.shape, pad_id, dtype=torch.long)
    ids[mask.bool()] = torch.tensor([t for s in seqs for t in s], dtype=torch.long)
    pin = device.type == "cuda"
    return (ids.pin_memory() if pin else ids).to(device, non_blocking=pin), \
           (mask.pin_memory() if pin else mask).to(device, non_blocking=pin)
