"""The one way a batch is split across data-parallel ranks: contiguous, equal blocks in rank order. A batch that does
not split evenly is an error here (the config check refuses such sizes up front); callers whose sizes are not
up to the config (validation sets, scoring an arbitrary list) pad with `pad_rows` and trim the results.

The driver does the splitting: each actor receives only its block. A batch made by several producers (the rollout
actors) is cut into pieces at every boundary any consumer group needs (`piece_bounds`), so each consumer rank reads
exactly the pieces of its block; rollout prompts are split by token counts (`balanced_bounds`)."""
from __future__ import annotations

import torch


def shard_slice(num_rows: int, rank: int, world_size: int) -> slice:
    """Rows of rank `rank` among `world_size` ranks; refuses to drop rows."""
    if num_rows % world_size:
        raise ValueError(f"{num_rows} rows do not split evenly over {world_size} ranks")
    size = num_rows // world_size
    return slice(rank * size, (rank + 1) * size)


def shard_bounds(num_rows: int, world_size: int) -> list[int]:
    """Row boundaries of `world_size` equal contiguous blocks: [0, n/W, 2n/W, ..., n]."""
    return [shard_slice(num_rows, rank, world_size).start for rank in range(world_size)] + [num_rows]


def balanced_bounds(weights: list[float], parts: int) -> list[int]:
    """Boundaries of `parts` contiguous blocks of items whose weight sums are as equal as the order allows: block k
    ends where the running sum is nearest k/parts of the total. Each block gets at least one item while there are
    enough (fewer items than parts: the last blocks are empty); with equal weights the blocks are equal."""
    n = len(weights)
    running = [0.0]
    for weight in weights:
        running.append(running[-1] + float(weight))
    bounds = [0]
    for k in range(1, parts):
        low, high = min(n, bounds[-1] + 1), max(min(n, bounds[-1] + 1), n - (parts - k))
        target = running[n] * k / parts
        bounds.append(min(range(low, high + 1), key=lambda i: (abs(running[i] - target), i)))
    return bounds + [n]


def piece_bounds(*bounds: list[int]) -> list[int]:
    """The finest common cut of several splittings of the same rows (each a list of boundaries from 0 to n)."""
    return sorted(set().union(*bounds))


def sample_layout(prompt_work: list[float], samples_per_prompt: int, producers: int,
                  readers: list[int]) -> tuple[list[int], list[int]]:
    """Where a batch of samples is made and how it is cut: `producers` actors each sample a contiguous block of the
    prompts (balanced by `prompt_work`, what sampling each costs), `samples_per_prompt` adjacent rows per prompt;
    `readers` are the rank counts of the groups that read the rows, each rank its equal block. Returns the
    producers' row boundaries and the cut points: every producer's block and every reader's block is a union of
    the pieces between consecutive cuts."""
    rows = [b * samples_per_prompt for b in balanced_bounds(prompt_work, producers)]
    return rows, piece_bounds(rows, *[shard_bounds(rows[-1], count) for count in readers])


def covering(pieces: list[tuple[int, int, object]], start: int, stop: int) -> list:
    """The items of the (start, stop, item) pieces that make up rows [start, stop) exactly, in order."""
    inside = [item for a, b, item in pieces if start <= a and b <= stop and a < b]
    if sum(b - a for a, b, _ in pieces if start <= a and b <= stop) != stop - start:
        raise ValueError(f"rows {start}-{stop} are not a union of pieces {[(a, b) for a, b, _ in pieces]}")
    return inside


def local_plan(plan: list[torch.Tensor], start: int, stop: int) -> list[torch.Tensor]:
    """Each minibatch of `plan` (global row indices) restricted to the block [start, stop), as indices into it."""
    return [rows[(rows >= start) & (rows < stop)] - start for rows in plan]


def take(batch, rows):
    """Rows of a tensor, or of a batch object with `select` (Experience, TokenBatch, RankingBatch)."""
    return batch[rows] if isinstance(batch, torch.Tensor) else batch.select(rows)


def shard(batch, rank: int, world_size: int):
    """The contiguous block of `batch` that rank `rank` owns."""
    return take(batch, shard_slice(len(batch), rank, world_size))


def concat(parts: list):
    """Row blocks of one batch type joined in order (tensors, `Experience`, `TokenBatch`, `RankingBatch`)."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return type(parts[0]).concat(parts)


def by_length(batch, size: int) -> list[torch.Tensor]:
    """Row indices of `batch` in micro-batches of at most `size` rows. Rows of an `Experience` are grouped by
    length (response, then prompt; a stable sort), so a micro-batch run on its real lengths (`Experience.trimmed`)
    pads little; other batches stay in order. Every chunk count is the plain one (ZeRO-3 ranks walk alike)."""
    if hasattr(batch, "response_mask") and hasattr(batch, "attention_mask") and batch.attention_mask is not None:
        prompt = batch.attention_mask[:, :batch.prompt_length].sum(dim=1)
        response = batch.response_mask.sum(dim=1).long()
        order = torch.sort(response * (batch.prompt_length + 1) + prompt, stable=True).indices
    else:
        order = torch.arange(len(batch))
    return list(order.split(size))


def micro_batches(batch, size: int) -> list:
    """`batch` as the micro-batches of `by_length`."""
    return [take(batch, rows) for rows in by_length(batch, size)]


def map_rows(batch, size: int, fn) -> torch.Tensor:
    """`fn` on each micro-batch of `by_length`, its per-row outputs (float, on CPU) put back in row order."""
    groups = by_length(batch, size)
    outputs = torch.cat([fn(take(batch, rows)).float().cpu() for rows in groups])
    result = torch.empty_like(outputs)
    result[torch.cat(groups)] = outputs
    return result


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
