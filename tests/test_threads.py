"""The thread-count rule: a number as given, "auto" from the cores other processes leave idle."""

import os

import pytest
import torch

from vaeguard import threads


@pytest.mark.parametrize("cores, busy, expected", [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 6.3, 1), (8, 2.2, 6), (1, 0.0, 1)])
def test_auto_takes_the_cores_other_processes_leave_idle(cores, busy, expected):
    assert threads.idle_cores(cores, busy) == expected


def test_busy_cores_are_measured_on_the_affinity_cores_less_this_process(monkeypatch):
    ticks = iter([1000, 1000 + 150 * int(os.sysconf("SC_CLK_TCK") / 100)])  # 1.5 s busy over...
    clock = iter([10.0, 10.5])  # ...of which this process used 0.5 s
    monkeypatch.setattr(threads, "_busy_ticks", lambda cores: next(ticks))
    monkeypatch.setattr(threads.time, "process_time", lambda: next(clock))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    assert threads.busy_cores_elsewhere(seconds=1.0) == pytest.approx(1.0)


def test_without_proc_stat_the_load_average_stands_in(monkeypatch):
    monkeypatch.setattr(threads, "_busy_ticks", lambda cores: None)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.7, 1.0, 1.0))
    assert threads.busy_cores_elsewhere() == 1.7
    assert threads.idle_cores(4) == 2


def test_proc_stat_is_read_for_the_cores_of_the_affinity_mask_only():
    mine = os.sched_getaffinity(0)
    assert threads._busy_ticks(mine) is not None and threads._busy_ticks(mine) > 0
    assert threads._busy_ticks({10_000}) is None  # no such CPU: nothing to measure


def test_resolve_and_use(monkeypatch):
    monkeypatch.setattr(threads, "idle_cores", lambda: 3)
    assert threads.resolve_threads("auto") == threads.resolve_threads(None) == 3
    assert threads.resolve_threads(2) == 2
    for bad in (0, -1, 1.5, "two", True):
        with pytest.raises(ValueError, match="threads must be a positive integer or 'auto'"):
            threads.resolve_threads(bad)
    before = torch.get_num_threads()
    try:
        assert threads.use_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
