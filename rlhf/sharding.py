"""The one way a batch is split across data-parallel ranks: contiguous, equal blocks in rank order. A batch that does
not split evenly is an error here (the config check refuses such sizes up front); callers whose sizes are not
up to the config (validation sets, scoring an arbitrary list) pad with `pad_rows` and trim the results."""
from __future__ import annotations

import torch


def shard_slice(num_rows: int, rank: int, world_size: int) -> slice:
    """Rows of rank `rank` among `world_size` ranks; refuses to drop rows."""
    if num_rows % world_size:
        raise ValueError(f"{num_rows} rows do not split evenly over {world_size} ranks")
    size = num_rows // world_size
    return slice(rank * size, (rank + 1) * size)


def take(batch, rows):
    """Rows of a tensor, or of a batch object with `select` (Experience, TokenBatch, RankingBatch)."""
    return batch[rows] if isinstance(batch, torch.Tensor) else batch.select(rows)


def shard(batch, rank: int, world_size: int):
    """The contiguous block of `batch` that rank `rank` owns."""
    return take(batch, shard_slice(len(batch), rank, world_size))


def chunks(batch, size: int):
    """`batch` in consecutive chunks of at most `size` rows."""
    for start in range(0, len(batch), size):
        yield take(batch, slice(start, start + size))


def pad_rows(batch, multiple: int):
    """`batch` with its last row repeated until its length is a multiple of `multiple`; returns (padded, real rows).
    Per-row results of the padding rows are dropped by the caller (`results[:real]`), so no row is lost or counted
    twice."""
    real = len(batch)
    missing = -real % multiple
    if missing == 0:
        return batch, real
    index = torch.cat([torch.arange(real), torch.full((missing,), real - 1)])
    return take(batch, index), real
