"""Chunked loops that back off on out-of-memory: a chunk that does not fit is retried at half the
size (down to 1), the smaller size is kept for the rest of the run, and the choice is reported
once. On a CPU nothing changes; on a GPU the default batch sizes can be optimistic. And plain chunks
of a list, and left padding, which generation and the model judges share."""

from __future__ import annotations

import sys
import warnings
from typing import Callable, Sequence

import torch


class BatchSizeWarning(UserWarning):
    """The batch size was lowered after an out-of-memory error."""


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def _free() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_chunks(n: int, size: int, fn: Callable[[int, int], None], what: str = "batch") -> int:
    """Call ``fn(start, stop)`` over ``range(n)`` in chunks of ``size``, halving the chunk on
    out-of-memory. Returns the size that was used in the end."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    start, first = 0, size
    while start < n:
        stop = min(start + size, n)
        try:
            fn(start, stop)
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not is_oom(e) or size == 1:
                raise
            del e
            _free()
            size = max(1, size // 2)
            continue
        start = stop
    if size != first:
        msg = f"safetyheads: out of memory at {what} size {first}; continued with {size}"
        warnings.warn(msg, BatchSizeWarning, stacklevel=2)
        print(msg, file=sys.stderr)
    return size


def chunks(items: Sequence, size: int) -> list[list]:
    """``items`` in consecutive lists of ``size`` (the last one may be shorter): the batches of a loop that
    does not back off (``run_chunks`` does)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, each ``[B, T_max]``, padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask
