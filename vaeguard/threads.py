"""How many threads torch computes with: a number, or "auto".

torch's own default is one thread per core. On a machine that other processes keep busy, those
threads spin-wait for cores they do not get: `vaeguard digits` took 42-66 s with torch's default
on a busy 2-core machine and 9-16 s with one thread (issue #23). "auto" therefore takes the cores
this process may run on (its CPU affinity) less the ones other processes keep busy right now,
and at least one. "Right now" is measured over a tenth of a second from /proc/stat, on the
cores of the affinity mask only, less this process's own CPU time (so a fit that follows a fit
does not count itself); where /proc/stat is missing, the one-minute load average stands in.
An OMP_NUM_THREADS set in the environment is taken as the user's choice and used instead.

torch's thread count belongs to the whole process. The command line sets it once
(`use_threads`); a detector's methods and a detector's scorer set it for their own duration
and then give the caller's back (`threads_for`): fitting a detector inside someone's
program leaves that program's torch as it found it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

AUTO = "auto"
SAMPLE_SECONDS = 0.1


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _busy_ticks(cores: set[int]) -> int | None:
    """Ticks the CPUs in `cores` have spent busy since boot (/proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    total, seen = 0, 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            values = [int(v) for v in fields[:8]]
            total += sum(values) - values[3] - values[4]  # all but idle and iowait
            seen += 1
    return total if seen else None


def busy_cores_elsewhere(seconds: float = SAMPLE_SECONDS) -> float:
    """How many of this process's cores other processes keep busy: /proc/stat over `seconds`,
    less this process's own CPU time; else the one-minute load average; else 0."""
    try:
        cores = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        cores = set(range(os.cpu_count() or 1))
    start, own = _busy_ticks(cores), time.process_time()
    if start is not None:
        time.sleep(seconds)
        end, own = _busy_ticks(cores), time.process_time() - own
        if end is not None:
            busy = (end - start) / os.sysconf("SC_CLK_TCK") - own
            return max(0.0, busy / seconds)
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def idle_cores(cores: int | None = None, busy: float | None = None) -> int:
    """`cores` (default: `available_cores()`) less the `busy` ones (default: measured); at least 1."""
    cores = available_cores() if cores is None else cores
    busy = busy_cores_elsewhere() if busy is None else busy
    return max(1, min(cores, cores - round(busy)))


_auto: tuple[float, int] | None = None  # (when measured, idle cores): reused for AUTO_SECONDS
AUTO_SECONDS = 60.0


def resolve_threads(threads: int | str | None) -> int:
    """The thread count for `threads`: a positive int as given; "auto" or None by `idle_cores()`,
    measured at most once a minute (scoring calls it per call)."""
    global _auto
    if threads is None or threads == AUTO:
        chosen = os.environ.get("OMP_NUM_THREADS", "").strip()
        if chosen.isdigit() and int(chosen) >= 1:
            return int(chosen)  # the user's own choice for this environment, as torch honours it
        now = time.monotonic()
        if _auto is None or now - _auto[0] > AUTO_SECONDS:
            _auto = (now, idle_cores())
        return _auto[1]
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer or 'auto', not {threads!r}")
    return threads


def use_threads(threads: int | str | None) -> int:
    """Set torch's intra-op thread count from `threads` (see `resolve_threads`); return it."""
    import torch

    n = resolve_threads(threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def threads_for(threads: int | str | None) -> Iterator[int]:
    """torch's intra-op thread count from `threads` (see `resolve_threads`) inside the block,
    and the caller's again after it; yields the count used."""
    import torch

    before = torch.get_num_threads()
    try:
        yield use_threads(threads)
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
