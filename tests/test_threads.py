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
    calls = []
    monkeypatch.setattr(threads, "idle_cores", lambda: calls.append(1) or 3)
    monkeypatch.setattr(threads, "_auto", None)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.resolve_threads("auto") == threads.resolve_threads(None) == 3
    assert len(calls) == 1  # measured once, reused within AUTO_SECONDS
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert threads.resolve_threads("auto") == 5  # the environment's choice wins over the measurement
    assert threads.resolve_threads(2) == 2
    for bad in (0, -1, 1.5, "two", True):
        with pytest.raises(ValueError, match="threads must be a positive integer or 'auto'"):
            threads.resolve_threads(bad)
    before = torch.get_num_threads()
    try:
        assert threads.use_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_estimator_and_the_cli_set_the_threads_they_are_given(tmp_path, monkeypatch):
    """A detector computes with its `threads` and gives the caller's count back after each call
    (fit, scoring, its scorer, the generative methods); the CLI sets it for the process."""
    import numpy as np
    import pandas as pd
    from sklearn.utils._param_validation import InvalidParameterError
    from typer.testing import CliRunner

    from vaeguard import VAEAnomalyDetector, bulk, generative, load, scorer, training
    from vaeguard.cli import app

    seen = []  # torch's thread count inside training and scoring
    train, score = training.train_vae, scorer.Scorer._score_chunk
    monkeypatch.setattr("vaeguard.estimator.train_vae", lambda *a, **k: seen.append(("train", torch.get_num_threads())) or train(*a, **k))
    monkeypatch.setattr(scorer.Scorer, "_score_chunk", lambda *a, **k: seen.append(("score", torch.get_num_threads())) or score(*a, **k))
    X = np.random.default_rng(0).normal(size=(60, 3))
    before = torch.get_num_threads()
    try:
        with pytest.raises(InvalidParameterError, match="threads"):
            VAEAnomalyDetector(threads=0).fit(X)
        torch.set_num_threads(1)
        detector = VAEAnomalyDetector(latent_dim=2, hidden_dims=(4,), epochs=1, random_state=0, threads=2).fit(X)
        assert seen[0] == ("train", 2) and ("score", 2) in seen and torch.get_num_threads() == 1
        seen.clear()
        detector.predict(X), detector.scorer().anomaly_score(X)
        bulk.score_frame(detector, pd.DataFrame(X, columns=["x0", "x1", "x2"]))
        assert seen == [("score", 2)] * 3 and torch.get_num_threads() == 1
        inside = []
        monkeypatch.setattr("vaeguard.estimator.encode_means", lambda m, rows, n: inside.append(torch.get_num_threads()) or np.zeros((len(rows), 2)))
        detector.encode(X[:1]), detector.interpolate(X[0], X[1], steps=2)
        assert inside == [2, 2] and torch.get_num_threads() == 1
        decoded, decode = [], generative.decode
        monkeypatch.setattr(generative, "decode", lambda *a, **k: decoded.append(torch.get_num_threads()) or decode(*a, **k))
        detector.sample(2), detector.decode(np.zeros((1, 2)))
        assert decoded == [2, 2] and torch.get_num_threads() == 1
        detector.save(tmp_path / "m.vgm")
        assert load(tmp_path / "m.vgm").threads == 2  # a parameter like any other: saved with the model
        np.savetxt(tmp_path / "d.csv", X, delimiter=",", header="x0,x1,x2", comments="")
        result = CliRunner().invoke(app, ["-q", "score", str(tmp_path / "m.vgm"), str(tmp_path / "d.csv"), "-o", str(tmp_path / "s.csv"), "--threads", "3"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 3  # the command line's process: set once, for the run
        result = CliRunner().invoke(app, ["-q", "score", str(tmp_path / "m.vgm"), str(tmp_path / "d.csv"), "-o", str(tmp_path / "s.csv"), "--threads", "many"])
        assert result.exit_code == 2 and "must be auto or a positive integer" in result.output
    finally:
        torch.set_num_threads(before)

