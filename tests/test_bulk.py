"""Bulk scoring from Python: score_frame, score_file, and one meaning of "flagged" everywhere."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from typer.testing import CliRunner

import vaeguard
from vaeguard import DataError, VAEAnomalyDetector
from vaeguard.bulk import score_file, score_frame
from vaeguard.inputs import SCORE_COLUMNS
from vaeguard.cli import app
from vaeguard.scorer import Scorer
from vaeguard.metrics import evaluate
from vaeguard.report import write_report

COLUMNS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def frame_detector():
    """Fitted in Python on a DataFrame: no CLI, no file."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 2))
    normal = pd.DataFrame(np.column_stack([z[:, 0], z[:, 1], z[:, 0] + z[:, 1]]), columns=COLUMNS)
    det = VAEAnomalyDetector(latent_dim=2, hidden_dims=(16,), epochs=30, random_state=0, device="cpu")
    return det.fit(normal), normal


def test_a_detector_fitted_in_python_scores_a_csv_like_score_frame(frame_detector, tmp_path):
    det, normal = frame_detector
    test = normal.iloc[:50].copy()
    test.loc[test.index[:5], "c"] += 8.0  # breaks the c = a + b relation
    test.insert(0, "note", "x")  # an extra column is ignored
    path = test.to_csv(tmp_path / "t.csv", index=False) or tmp_path / "t.csv"
    summary = score_file(det, path, tmp_path / "scores.csv", chunk_size=7)
    from_file = pd.read_csv(tmp_path / "scores.csv", keep_default_na=False)
    from_frame = score_frame(det, test)
    assert list(from_file.columns) == ["row", *SCORE_COLUMNS]
    assert list(from_frame.columns) == list(SCORE_COLUMNS)
    np.testing.assert_array_equal(from_file["score"], from_frame["score"])  # the CSV keeps every bit
    assert from_file["is_anomaly"].tolist() == from_frame["is_anomaly"].tolist()
    assert from_frame["is_anomaly"].iloc[:5].tolist() == [1] * 5
    assert from_frame["is_anomaly"].iloc[5:].sum() <= 3  # ~1% false-positive target on 45 normals
    assert set(from_frame["top_1"].iloc[:5]) <= set(COLUMNS)
    assert summary.n_scored == 50 and any("ignored 1 extra column" in note for note in summary.notes)


def test_score_frame_keeps_the_index_and_names_bad_cells(frame_detector):
    det, normal = frame_detector
    frame = normal.iloc[:4].astype(object).set_axis([10, 11, 12, 13])
    frame.loc[11, "b"] = "oops"
    frame.loc[13, "a"] = np.inf
    out = score_frame(det, frame)
    assert out.index.tolist() == [10, 11, 12, 13]
    assert out.loc[11, "error"] == "column 'b': 'oops' is not a number"
    assert "column 'a'" in out.loc[13, "error"]
    assert out["is_anomaly"].isna().tolist() == [False, True, False, True]
    assert np.isnan(out.loc[11, "score"]) and out.loc[10, "error"] == ""
    with pytest.raises(DataError, match="'c'"):
        score_frame(det, normal.drop(columns="c"))


def test_a_row_exactly_at_the_threshold_is_normal_everywhere(frame_detector, tmp_path):
    """predict, bulk scoring, metrics and the report share one definition of flagged."""
    det, normal = frame_detector
    det = VAEAnomalyDetector(**det.get_params()).fit(normal)
    row = normal.iloc[[3]]
    at = float(det.anomaly_score(row)[0])
    det.calibrate_scores(np.full(200, at), fpr=0.01)  # every calibration score equals it
    assert det.threshold_ == at
    assert det.predict(row).tolist() == [1]
    assert score_frame(det, row)["is_anomaly"].tolist() == [0]
    path = tmp_path / "row.csv"
    row.to_csv(path, index=False)
    score_file(det, path, tmp_path / "scores.csv")
    assert pd.read_csv(tmp_path / "scores.csv")["is_anomaly"].tolist() == [0]
    y, scores = [0, 1], [at, at + 1.0]
    assert evaluate(y, scores, det.threshold_, n_bootstrap=0)["fp"] == 0
    write_report(tmp_path / "report", y, scores, threshold=det.threshold_)
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["fp"] == 0
    # and a score just above it is flagged by all of them
    above = np.nextafter(at, np.inf)
    assert evaluate(y, [above, at + 1.0], det.threshold_, n_bootstrap=0)["fp"] == 1


def test_an_image_model_refuses_a_table(tmp_path):
    X = np.random.default_rng(0).random((60, 64))
    det = VAEAnomalyDetector(latent_dim=2, hidden_dims=(8,), epochs=1, input_shape=(1, 8, 8), random_state=0, device="cpu").fit(X)
    with pytest.raises(DataError, match="trained on images"):
        score_frame(det, pd.DataFrame(X))
    path = tmp_path / "t.csv"
    pd.DataFrame(X).to_csv(path, index=False)
    with pytest.raises(DataError, match="folder of images"):
        score_file(det, path, tmp_path / "out.csv")


def test_a_scorer_loaded_from_the_file_scores_like_the_detector(frame_detector, tmp_path):
    det, normal = frame_detector
    det.save(tmp_path / "m.vgm")
    scorer = Scorer.load(tmp_path / "m.vgm", device="cpu")
    rows = normal.iloc[:40]
    np.testing.assert_array_equal(scorer.anomaly_score(rows.to_numpy()), det.anomaly_score(rows))
    pd.testing.assert_frame_equal(score_frame(scorer, rows), score_frame(det, rows))
    assert scorer.threshold == det.threshold_ and scorer.calibration_scores.tolist() == det.calibration_scores_.tolist()
    with pytest.raises(DataError, match="rows of 3 features"):
        scorer.anomaly_score(np.zeros((2, 4)))


def test_scoring_a_file_never_imports_scikit_learn(frame_detector, tmp_path):
    """`vaeguard score` loads a Scorer, not the estimator: scikit-learn (and the scipy.stats
    it imports) would add about 60 MB to every scoring process."""
    det, normal = frame_detector
    det.save(tmp_path / "m.vgm")
    normal.iloc[:20].to_csv(tmp_path / "t.csv", index=False)
    code = (
        "import sys; from vaeguard.cli import app\n"
        f"sys.argv = ['vaeguard', '-q', 'score', {str(tmp_path / 'm.vgm')!r}, {str(tmp_path / 't.csv')!r}, "
        f"'-o', {str(tmp_path / 's.csv')!r}, '--device', 'cpu']\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    assert len(pd.read_csv(tmp_path / "s.csv")) == 20


def test_a_scorer_rejects_what_the_model_cannot_score(tmp_path):
    import torch

    X = np.random.default_rng(0).uniform(size=(120, 4))
    VAEAnomalyDetector(likelihood="bernoulli", latent_dim=2, hidden_dims=(8,), epochs=2, random_state=0, device="cpu").fit(X).save(tmp_path / "b.vgm")
    scorer = Scorer.load(tmp_path / "b.vgm", device="cpu")
    with pytest.raises(DataError, match=r"needs values in \[0, 1\]; row 1, column 'x2' holds 1.5"):
        scorer.anomaly_score(np.array([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 1.5, 0.4]]))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            Scorer.load(tmp_path / "b.vgm", device="cuda")


def _cli(*args) -> None:
    result = CliRunner().invoke(app, ["-q", *map(str, args)])
    assert result.exit_code == 0, result.output


def test_every_path_gives_the_same_float_for_the_same_row(frame_detector, tmp_path):
    """The estimator (fitted, and loaded), a Scorer read from the model file, score_frame and
    `vaeguard score` (CSV and Parquet output, read back) give bit-identical scores and
    p-values. The rows hold float64 values float32 cannot represent, so every path must round
    them alike; the last row overflows the network (an infinite score, written as inf)."""
    pytest.importorskip("pyarrow")
    det, normal = frame_detector
    rows = normal.iloc[:300] * 1.0001 + 1e-7
    rows.iloc[-1] = [3e38, 0.0, 0.0]
    values = rows.to_numpy()
    assert (values.astype(np.float32).astype(np.float64) != values).mean() > 0.9
    det.save(tmp_path / "m.vgm")
    rows.to_csv(tmp_path / "rows.csv", index=False)  # shortest repr: reads back as the same float64
    _cli("score", tmp_path / "m.vgm", tmp_path / "rows.csv", "-o", tmp_path / "s.csv", "--chunk-size", 64)
    _cli("score", tmp_path / "m.vgm", tmp_path / "rows.csv", "-o", tmp_path / "s.parquet")
    from_csv, from_parquet = pd.read_csv(tmp_path / "s.csv"), pd.read_parquet(tmp_path / "s.parquet")
    expected = det.anomaly_score(rows)
    assert np.isfinite(expected[:-1]).all() and expected[-1] == np.inf
    paths = {
        "estimator, array": det.anomaly_score(values),
        "estimator, loaded": vaeguard.load(tmp_path / "m.vgm", device="cpu").anomaly_score(rows),
        "Scorer.load": Scorer.load(tmp_path / "m.vgm", device="cpu").anomaly_score(values),
        "score_frame": score_frame(det, rows)["score"].to_numpy(),
        "CLI, CSV": from_csv["score"].to_numpy(),
        "CLI, Parquet": from_parquet["score"].to_numpy(),
    }
    for name, scores in paths.items():
        assert np.array_equal(scores, expected), name
    p = det.p_values(rows)
    assert np.array_equal(from_csv["p_value"].to_numpy(), p) and np.array_equal(from_parquet["p_value"].to_numpy(), p)
    # the CSV output reads back as the Parquet output, column for column
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "s.csv", keep_default_na=False), from_parquet, check_dtype=False)


def test_an_infinity_is_the_same_error_on_every_path(frame_detector, tmp_path):
    """The estimator and a Scorer (from the detector or the model file) refuse an infinity or a
    row with no value alike, naming the row (counting from 0) and the column; a NaN is a
    missing cell and scores the same on every path."""
    det, normal = frame_detector
    det.save(tmp_path / "m.vgm")
    scorers = {
        "estimator": det.anomaly_score,
        "estimator, a DataFrame": lambda X: det.anomaly_score(pd.DataFrame(X, columns=COLUMNS)),
        "detector.scorer()": det.scorer().anomaly_score,
        "Scorer.load": Scorer.load(tmp_path / "m.vgm", device="cpu").anomaly_score,
    }
    for value, message in ((-np.inf, "row 1, column 'c': -inf is not a finite number"), (np.nan, "row 1: every feature cell is missing: nothing to score")):
        X = normal.iloc[:3].to_numpy().copy()
        X[1, 2] = value
        if np.isnan(value):
            X[1] = np.nan
        for name, score in scorers.items():
            with pytest.raises(DataError) as caught:
                score(X)
            assert str(caught.value) == message, name
    X = normal.iloc[:3].to_numpy().copy()
    X[1, 2] = np.nan
    scores = {name: score(X) for name, score in scorers.items()}
    assert np.isfinite(scores["estimator"]).all()
    for name, got in scores.items():
        np.testing.assert_array_equal(got, scores["estimator"], err_msg=name)


def test_evaluate_counts_an_infinite_score_as_score_flags_it(frame_detector, tmp_path):
    """`score` flags a row whose score is not finite; `evaluate` does the same (a flagged
    anomaly, ranked above every finite score) and says so, where it used to refuse the file."""
    det, normal = frame_detector
    det.save(tmp_path / "m.vgm")
    data = normal.iloc[:60].copy()
    data["label"] = [0] * 50 + [1] * 10
    data.loc[data.index[50:], "c"] += 8.0
    data.loc[data.index[3], "a"] = 3e38  # labelled normal: a false positive, as `score` flags it
    data.to_csv(tmp_path / "labelled.csv", index=False)
    args = ["-q", "evaluate", tmp_path / "m.vgm", tmp_path / "labelled.csv", "--label-column", "label", "-o", tmp_path / "report"]
    result = CliRunner().invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    assert "warning: " in result.output and "1 sample(s): score is not finite (values far outside the training data): flagged" in result.output
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    _cli("score", tmp_path / "m.vgm", tmp_path / "labelled.csv", "-o", tmp_path / "s.csv")
    scored = pd.read_csv(tmp_path / "s.csv", keep_default_na=False)
    assert scored.loc[3, "score"] == np.inf and "score is not finite" in scored.loc[3, "error"]
    flagged = scored["is_anomaly"].to_numpy(bool)
    assert metrics["fp"] == flagged[:50].sum() >= 1 and metrics["tp"] == flagged[50:].sum() == 10
    assert metrics["summary"]["scores not finite (flagged)"] == 1 and metrics["auroc"] > 0.95


def test_a_failed_run_with_parquet_output_prints_one_line(frame_detector, tmp_path):
    """The Parquet writer is closed before the partial file is removed: no "Exception ignored
    in ParquetWriter.__del__ ... write to closed file" after the error line."""
    pytest.importorskip("pyarrow")
    det, normal = frame_detector
    det.save(tmp_path / "m.vgm")
    bad = pd.concat([normal] * 4, ignore_index=True).astype(object)
    bad.loc[1500, "b"] = "oops"  # in the third chunk: two row groups are written before it
    bad.to_csv(tmp_path / "bad.csv", index=False)
    run = subprocess.run(
        [sys.executable, "-m", "vaeguard", "-q", "score", tmp_path / "m.vgm", tmp_path / "bad.csv", "-o", tmp_path / "out.parquet", "--chunk-size", "600"],
        capture_output=True, text=True,
    )
    assert run.returncode == 1
    assert run.stderr.splitlines() == [f"error: {tmp_path / 'bad.csv'}: column 'b', row 1501 (line 1502): 'oops' is not a number"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "m.vgm"]


def test_an_interrupted_parquet_output_closes_its_writer(frame_detector, tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    det, normal = frame_detector
    normal.to_csv(tmp_path / "t.csv", index=False)
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    def interrupt(n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        score_file(det, tmp_path / "t.csv", tmp_path / "out.parquet", chunk_size=100, progress=interrupt)
    import gc

    gc.collect()
    assert unraisable == [] and not (tmp_path / "out.parquet").exists()


def test_a_source_with_no_rows_gets_the_header_line_alone(frame_detector, tmp_path):
    pytest.importorskip("pyarrow")
    det, normal = frame_detector
    normal.iloc[:0].to_parquet(tmp_path / "empty.parquet")
    summary = score_file(det, tmp_path / "empty.parquet", tmp_path / "out.csv")
    assert summary.n_scored == 0
    assert (tmp_path / "out.csv").read_bytes() == ",".join(["row", *SCORE_COLUMNS]).encode() + b"\r\n"
