"""Sharding a sweep across processes with accelerate (``accelerate launch --num_processes N ...``).

Work is split into units that one process computes exactly as a single process would (a prompt of
a Ships sweep, a chunk of a Sahara step's candidate heads, a batch of a generation run), the units
are dealt round-robin, and after each round the results are gathered (``accelerate.utils.gather_object``)
into every process, in the single-process order. So a sharded run returns exactly what one process
returns, and whatever is saved after each round survives a crash just as before.

Without a launcher (WORLD_SIZE unset or 1) everything here is a no-op and nothing from accelerate
is imported. On a machine without a GPU the processes talk over gloo (``PartialState(cpu=True)``).
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta
from typing import Callable, Sequence, TypeVar

import torch

from .errors import SafetyheadsError

T = TypeVar("T")
R = TypeVar("R")

_STATE = None
TIMEOUT_ENV = "SAFETYHEADS_PROCESS_TIMEOUT"
# How long a process waits in a collective for the others. The harness's other processes wait while the
# main one computes a step that is not split (a model judge's verdicts, a small result) or waits for
# another run's lock on a store entry: minutes to hours at paper scale, not torch's default 30 minutes.
# A process that dies does not leave the others waiting this long: the launcher ends them all.
DEFAULT_TIMEOUT_S = 6 * 3600


def world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def state():
    """accelerate's PartialState when launched with several processes, else None."""
    global _STATE
    if world_size() <= 1:
        return None
    if _STATE is None:
        from accelerate import PartialState  # only under a launcher: a single process never imports accelerate

        _STATE = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=process_timeout_s()))
        atexit.register(_close_process_group)
    return _STATE


def _close_process_group() -> None:
    """Destroy the process group while the interpreter is still whole. Left to interpreter finalization,
    gloo's worker threads can still hold work objects whose tensors reference Python; destroying them then
    aborts the process ("terminate called without an active exception", SIGABRT), now and then, mostly
    under load (pytorch/pytorch#190489). Every collective here is synchronous, so nothing is pending at
    exit and no barrier is needed (one would hang a process whose peer died)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def process_timeout_s() -> float:
    """Seconds a process waits in a collective: ``$SAFETYHEADS_PROCESS_TIMEOUT``, else six hours."""
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise SafetyheadsError(f"{TIMEOUT_ENV}={text!r} is not a positive number of seconds: set it to e.g. 21600")
    return seconds


def rank() -> int:
    st = state()
    return 0 if st is None else st.process_index


def is_main() -> bool:
    return rank() == 0


def device_for_process(device: str | None) -> str | None:
    """With several processes on GPUs each takes its own (``cuda:<local rank>``)."""
    st = state()
    if st is None or device not in (None, "auto", "cuda"):
        return device
    return f"cuda:{st.local_process_index}" if torch.cuda.is_available() else "cpu"


def broadcast(obj: T) -> T:
    """The main process's ``obj`` on every process."""
    st = state()
    if st is None:
        return obj
    from accelerate.utils import broadcast_object_list  # only under a launcher (see state)

    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]


def from_main(compute: Callable[[], T]) -> T:
    """``compute()`` run on the main process only, its value handed to every process (without a launcher:
    ``compute()``). For what one process must do alone, such as reading or writing a file every process
    needs: the others must reach this call too, in the same order, or they wait for each other."""
    return broadcast(compute() if is_main() else None)


def sharded_map(fn: Callable[[T], R], units: Sequence[T], on_round: Callable[[list[tuple[int, R]]], None] | None = None
                ) -> list[R]:
    """``[fn(u) for u in units]``, the units dealt round-robin over the processes.

    After each round (one unit per process) the results are gathered into every process and
    ``on_round([(index, result), ...])`` is called on the main process, in unit order, so
    callers can save progress there. Returns every result, in unit order, on every process.
    """
    st = state()
    n = len(units)
    if st is None:
        out = []
        for i, u in enumerate(units):
            r = fn(u)
            out.append(r)
            if on_round:
                on_round([(i, r)])
        return out
    from accelerate.utils import gather_object  # only under a launcher (see state)

    world, me = st.num_processes, st.process_index
    results: list = [None] * n
    for start in range(0, n, world):
        i = start + me
        mine = [(i, fn(units[i]))] if i < n else []
        got = sorted(gather_object(mine), key=lambda t: t[0])
        for j, r in got:
            results[j] = r
        if on_round and st.is_main_process:
            on_round(got)
    return results

