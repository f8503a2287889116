"""Feature scales (#21): a feature that barely varies in training must not become a score of its own.

The failure on main: a 0/1 flag set in 1% of training rows got a scale of 0.10, the Gaussian
variance of its term collapsed onto the value nearly every row holds, and the rare normal row
with the flag outscored the anomalies, so the default threshold (set on calibration rows that
hold such flags) flagged 32% of the anomalies where the same table without flags gave 98%.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from vaeguard.estimator import VAEAnomalyDetector
from vaeguard.inputs import ImageInput, TableInput
import vaeguard.scorer as scorer
from vaeguard.scorer import feature_scales, tail_compression
from vaeguard.streaming import MAX_STEP_VALUES, Levels, TableStream


def flagged_table(seed=0, n=1000, flags=5, p=0.01):
    """8 correlated Gaussian columns and `flags` 0/1 columns set in a share p of rows; anomalies
    leave the Gaussian columns' 3-dimensional structure (their flags are like the normals')."""
    rng = np.random.default_rng(seed)
    W = np.random.default_rng(99).normal(size=(3, 8))

    def rows(m):
        return np.hstack([rng.normal(size=(m, 3)) @ W + 0.3 * rng.normal(size=(m, 8)), rng.random((m, flags)) < p])

    train, test, anomalies = rows(n), rows(500), rows(50)
    anomalies[:, :8] = 1.5 * rng.normal(size=(50, 8))
    return train, np.vstack([test, anomalies]), np.r_[np.zeros(500), np.ones(50)]


def recall_and_auroc(train, test, y):
    detector = VAEAnomalyDetector(random_state=0).fit(train)
    flagged = detector.predict(test) == -1
    return flagged[y == 1].mean(), roc_auc_score(y, detector.anomaly_score(test)), detector


def test_rare_flag_columns_do_not_take_over_the_default_threshold():
    train, test, y = flagged_table()
    recall, auroc, detector = recall_and_auroc(train, test, y)
    clean_recall, clean_auroc, _ = recall_and_auroc(train[:, :8], test[:, :8], y)
    # measured: with flags recall 0.92 and AUROC 0.996, clean 0.98 and 0.998 (main: 0.32, 0.986)
    assert recall >= 0.8 * clean_recall, (recall, clean_recall)
    assert auroc > clean_auroc - 0.01, (auroc, clean_auroc)
    # the flags' scale is the dequantised one, about sqrt(p (1 - p) + 1/12), not sqrt(p (1 - p)) ~ 0.1
    assert (detector.scale_[8:] > 0.29).all() and (detector.scale_[8:] < 0.32).all()


def test_feature_scales_floor_steps_in_quadrature_and_leave_fine_columns_alone():
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.normal(size=5000), rng.random(5000) < 0.01, rng.integers(0, 100, 5000), np.full(5000, 3.0)])
    steps = Levels(4).update(X).steps()
    assert steps.tolist() == [0.0, 1.0, 1.0, 0.0]  # continuous (> MAX_STEP_VALUES values), flag, count, constant
    scale = feature_scales(X.std(axis=0), steps, TableInput(tuple("abcd"), ("float64",) * 4))
    assert scale[0] == X.std(axis=0)[0]  # continuous: unchanged, bit for bit
    assert scale[1] == pytest.approx(np.sqrt(X[:, 1].var() + 1 / 12))
    assert scale[2] == X.std(axis=0)[2]  # a step far below the spread (1 in 29) is not material: unchanged
    assert scale[3] == 0.0  # constant: the estimator gives it 1


def test_images_and_categorical_levels_keep_their_exact_scales():
    """The step floor is for a table's numeric columns: image pixels (their floor is on the
    output variance, below) and a categorical column's one-hot features keep their spread bit for bit."""
    rng = np.random.default_rng(2)
    images = rng.random((400, 16))
    images[:, 0] = 0.0
    images[3, 0] = 0.05  # a pixel dark in every image but one: spread 0.0025
    std = images.std(axis=0)
    steps = Levels(16).update(images).steps()
    assert np.array_equal(feature_scales(std, steps, ImageInput((1, 4, 4))), std)
    table = feature_scales(std, steps, TableInput(tuple("abcdefghijklmnop"), ("float64",) * 16))
    assert table[0] == pytest.approx(np.sqrt(std[0] ** 2 + 0.05**2 / 12))  # the same spreads as a table: floored
    levels = (("x", "y"),) + (None,) * 14
    spec = TableInput(tuple("abcdefghijklmno"), ("text",) + ("float64",) * 14, levels=levels)
    flags = np.column_stack([rng.random(400) < 0.01, np.zeros(400), images[:, 2:]]).astype(float)
    scale = feature_scales(flags.std(axis=0), Levels(16).update(flags).steps(), spec)
    assert np.array_equal(scale[:2], flags.std(axis=0)[:2])


def test_levels_do_not_depend_on_the_chunking_and_skip_missing_cells():
    rng = np.random.default_rng(3)
    X = np.column_stack([rng.integers(0, 7, 3000) * 0.5, rng.normal(size=3000), rng.integers(0, 2 * MAX_STEP_VALUES, 3000)])
    X[rng.random(X.shape) < 0.1] = np.nan
    whole = Levels(3).update(X).steps()
    chunked = Levels(3)
    for start in range(0, 3000, 173):
        chunked.update(X[start : start + 173])
    assert np.array_equal(whole, chunked.steps())
    assert whole[0] == 0.5 and whole[1] == 0.0
    assert Levels(1).update(rng.normal(size=(300, 1))).steps()[0] == 0.0  # 300 distinct values in 300 rows
    assert whole[2] == 0.0  # over MAX_STEP_VALUES values: continuous, though no chunk of 173 rows holds that many


def test_out_of_core_training_floors_the_same_scales_as_in_memory(tmp_path):
    train, _, _ = flagged_table(n=3000)
    frame = pd.DataFrame(train, columns=[f"c{j}" for j in range(train.shape[1])])
    frame.to_csv(tmp_path / "t.csv", index=False)
    stream = TableStream(tmp_path / "t.csv", chunk_size=500)
    detector = VAEAnomalyDetector(random_state=0, epochs=2).fit_stream(stream)
    stats = stream.prepare(detector.seed_, 0.1, 0.2)
    rows = frame.to_numpy(dtype=np.float32)
    from vaeguard.streaming import row_hash_unit

    kept = rows[row_hash_unit(rows, detector.seed_) >= 0.3]
    np.testing.assert_array_equal(stats.steps, Levels(rows.shape[1]).update(kept).steps())
    assert stats.steps[8:].tolist() == [1.0] * 5
    np.testing.assert_allclose(detector.scale_, feature_scales(stats.std, stats.steps, stream.input_spec), rtol=0)
    assert np.array_equal(detector.scale_[:8], stats.std[:8])  # continuous columns: the std itself
    assert (detector.scale_[8:] > 0.29).all()


# ---------------------------------------------------------------- heavy-tailed columns


def traffic(n, seed=0, factor=1.0):
    """Four byte counts around 1,000 (log-normal, correlated) with spikes of 10^4-10^5 times in
    0.2% of cells, and four durations: the network-traffic shape that destabilised training."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    spikes = (rng.random((n, 4)) < 0.002) * rng.uniform(1e4, 1e5, (n, 4))
    counts = np.round(1000 * factor * np.exp(0.3 * z @ np.random.default_rng(1).normal(size=(2, 4))) * (1 + spikes))
    return np.hstack([counts, z @ np.random.default_rng(2).normal(size=(2, 4)) + 0.3 * rng.normal(size=(n, 4))])


def test_the_tail_rule_takes_only_columns_whose_spread_is_made_by_a_few_rows():
    rng = np.random.default_rng(0)
    n = 5000
    X = np.column_stack([
        rng.normal(size=n),  # Gaussian: std 0.74 IQR
        np.exp(rng.normal(size=n)),  # log-normal, sigma 1: 1.5 IQR
        np.where(rng.random(n) < 0.001, 1e7, 1.0) * rng.uniform(1, 2, n),  # spikes: thousands of IQRs
        (rng.random(n) < 0.01).astype(float),  # a rare flag: IQR 0, the step floor's case
        rng.integers(0, 2, n).astype(float),  # a categorical column's one-hot features
        np.zeros(n),
    ])
    X[:, 5] = 1 - X[:, 4]
    spec = TableInput(("g", "ln", "spiky", "flag", "kind"), ("float64",) * 4 + ("text",), levels=(None,) * 4 + (("a", "b"),))
    tails = tail_compression(X, spec)
    assert [t is not None for t in tails] == [False, False, True, False, False]
    median, iqr = np.percentile(X[:, 2], [50, 75])[0], np.subtract(*np.percentile(X[:, 2], [75, 25]))
    assert tails[2] == pytest.approx((median, iqr))
    assert tail_compression(X[:, :2], TableInput(("g", "ln"), ("float64",) * 2)) == ()  # nothing to compress: no tails field
    assert tail_compression(X[:, :2], ImageInput((1, 1, 2))) == ()


def test_a_heavy_tailed_column_is_modelled_on_a_scale_where_its_bulk_has_a_spread(monkeypatch):
    """Standardised as it is, a byte count's bulk is squeezed into 0.0005 of a unit by the spikes,
    and a row sending 8 times its usual bytes is not told from a normal one (AUROC 0.5, recall 0);
    compressed (asinh around the median, one IQR wide) it is (measured 0.996, recall 1.0)."""
    train, normal, odd = traffic(3000), traffic(500, 1), traffic(100, 2, factor=8.0)
    test, labels = np.vstack([normal, odd]), np.r_[np.zeros(500), np.ones(100)]
    results, default = {}, scorer.HEAVY_TAIL_RATIO
    for ratio in (default, np.inf):
        monkeypatch.setattr(scorer, "HEAVY_TAIL_RATIO", ratio)
        detector = VAEAnomalyDetector(random_state=0, epochs=5).fit(train)
        bulk = np.subtract(*np.percentile(detector._standardize(train)[:, 0], [75, 25]))
        results[ratio] = (detector, bulk, roc_auc_score(labels, detector.anomaly_score(test)), (detector.predict(odd) == -1).mean())
    detector, bulk, auroc, recall = results[default]
    assert [t is not None for t in detector.input_spec_.tails] == [True] * 4 + [False] * 4
    assert bulk > 0.5 and results[np.inf][1] < 0.01
    assert auroc > 0.95 and recall > 0.8
    assert results[np.inf][2] < 0.7
    # generated rows come back in the column's own units: byte counts around 1,000
    drawn = detector.sample(200, random_state=0)
    assert 300 < np.median(drawn[:, 0]) < 3000


def test_compressed_columns_travel_in_the_model_file_and_every_path_reads_them(tmp_path):
    from typer.testing import CliRunner

    from vaeguard import load
    from vaeguard.cli import app

    X = traffic(3000)
    frame = pd.DataFrame(X, columns=[f"bytes{j}" for j in range(4)] + [f"dur{j}" for j in range(4)])
    frame.to_csv(tmp_path / "t.csv", index=False)
    detector = VAEAnomalyDetector(random_state=0, epochs=2).fit(frame)
    detector.save(tmp_path / "m.vgm")
    loaded = load(tmp_path / "m.vgm")
    assert loaded.input_spec_.tails == detector.input_spec_.tails
    assert np.array_equal(loaded.anomaly_score(frame), detector.anomaly_score(frame))
    info = CliRunner().invoke(app, ["info", str(tmp_path / "m.vgm")])
    assert info.exit_code == 0 and info.output.count("heavy-tailed: compressed as asinh around") == 4
    streamed = VAEAnomalyDetector(random_state=0, epochs=2).fit_stream(TableStream(tmp_path / "t.csv", chunk_size=700))
    assert [t is not None for t in streamed.input_spec_.tails] == [True] * 4 + [False] * 4
    for (center, width), (c_sample, w_sample) in zip(detector.input_spec_.tails[:4], streamed.input_spec_.tails[:4]):
        assert c_sample == pytest.approx(center, rel=0.1) and w_sample == pytest.approx(width, rel=0.3)
    # the compressed columns' scales are those of compressed values, in and out of core alike
    assert np.allclose(streamed.scale_[:4], detector.scale_[:4], rtol=0.3)


TAIL_RULE = r"field 'tails' must hold, per column, null or \[center, width > 0\] of a numeric column"


@pytest.mark.parametrize(
    "tails, message",
    [
        ([[1.0, 0.0], None], TAIL_RULE),  # width 0
        ([[1.0, 2.0]], TAIL_RULE),  # one entry for two columns
        ([None, [0.0, 1.0]], TAIL_RULE),  # on a categorical column
        ("[1, 2]", TAIL_RULE),  # not a list
        ([[1.0, float("inf")], None], r"field 'input.tails\[0\]\[1\]' of the model description must be a finite number"),
    ],
)
def test_a_model_file_with_a_broken_tail_is_refused_naming_the_field(tmp_path, tails, message):
    from vaeguard import load
    from vaeguard.errors import ModelFileError
    from vaeguard.modelfile import read_model_file, write_model_file

    frame = pd.DataFrame({"bytes": traffic(400)[:, 0], "kind": np.random.default_rng(0).choice(["a", "b"], 400)})
    path = VAEAnomalyDetector(random_state=0, epochs=1).fit(frame).save(tmp_path / "m.vgm")
    description, arrays = read_model_file(path)
    description["input"]["tails"] = tails
    broken = write_model_file(tmp_path / "broken.vgm", description, arrays)
    with pytest.raises(ModelFileError, match=r"broken\.vgm does not describe a valid vaeguard model: .*" + message):
        load(broken)


def test_an_image_model_file_from_before_the_floor_loads_and_scores_without_it(tmp_path):
    from vaeguard import load
    from vaeguard.model import LOGVAR_MAX, LOGVAR_MIN
    from vaeguard.modelfile import read_model_file, write_model_file

    train, test = blobs(200, 0), blobs(20, 1)
    path = VAEAnomalyDetector(random_state=0, epochs=2, input_shape=(1, 12, 12)).fit(train).save(tmp_path / "m.vgm")
    description, arrays = read_model_file(path)
    assert description["model_config"].pop("variance_floor") is True
    arrays.pop("model.output_logvar_min")
    old = load(write_model_file(tmp_path / "old.vgm", description, arrays))
    assert not old.config_.variance_floor and "output_logvar_min" not in old.model_.state_dict()
    expected = old.model_.output_logvar.detach().clamp(LOGVAR_MIN, LOGVAR_MAX)
    assert torch.equal(old.model_.likelihood_logvar().detach(), expected)  # the clamp alone, as before
    assert np.isfinite(old.anomaly_score(test)).all()


# ---------------------------------------------------------------- the pixel floor


def blobs(m, seed, side=12):
    """Grey discs near the centre of dark images: the border pixels are blank in nearly all."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    c = side / 2 + rng.normal(0, 0.7, (m, 2))
    d = np.sqrt((yy[None] - c[:, 0, None, None]) ** 2 + (xx[None] - c[:, 1, None, None]) ** 2)
    return (np.clip(1.2 - d / rng.uniform(2, 3.5, m)[:, None, None], 0, 1) * rng.uniform(0.5, 1, (m, 1, 1))).reshape(m, -1)


def test_no_pixel_is_predicted_more_sharply_than_the_floor_so_a_speck_cannot_take_over_the_score(tmp_path):
    """A pixel lit in one training image of 400 has a spread of 0.005; long training drives its
    learned output variance to the clamp (simulated here by setting it there), and then a 0.1
    speck on it scores 1,421 nats. The floor keeps every pixel's predictive standard deviation
    at PIXEL_FLOOR_SHARE of the root mean square pixel spread (grey levels) or more."""
    from vaeguard import load
    from vaeguard.model import LOGVAR_MIN

    train, test = blobs(400, 0), blobs(50, 1)
    train[7, 0] = 0.1
    specked = test.copy()
    specked[:, 0] = 0.1
    detector = VAEAnomalyDetector(random_state=0, epochs=2, input_shape=(1, 12, 12)).fit(train)
    assert detector.config_.variance_floor
    floor = scorer.PIXEL_FLOOR_SHARE * np.sqrt(np.mean(train.std(axis=0) ** 2))
    with torch.no_grad():
        detector.model_.output_logvar.fill_(LOGVAR_MIN)  # what long training does to a near-blank pixel
    predictive = np.exp(0.5 * detector.model_.likelihood_logvar().detach().numpy()) * detector.scale_
    assert predictive.min() >= 0.8 * floor  # the training rows' spread: ~the fit's 70% of them
    added = detector.feature_scores(specked)[:, 0] - detector.feature_scores(test)[:, 0]
    assert np.median(added) < (0.1 / (0.8 * floor)) ** 2  # ~ (speck / floor)^2 / 2: a few dozen nats
    detector.model_.output_logvar_min.fill_(LOGVAR_MIN)  # the floor off
    unfloored = detector.feature_scores(specked)[:, 0] - detector.feature_scores(test)[:, 0]
    assert np.median(unfloored) > 10 * np.median(added)  # measured: 1,421 nats against 3.8
    # the floor travels in the model file
    detector = VAEAnomalyDetector(random_state=0, epochs=2, input_shape=(1, 12, 12)).fit(train)
    detector.save(tmp_path / "m.vgm")
    assert np.array_equal(load(tmp_path / "m.vgm").anomaly_score(specked), detector.anomaly_score(specked))


def test_tables_and_bernoulli_images_have_no_pixel_floor():
    rng = np.random.default_rng(0)
    assert not VAEAnomalyDetector(random_state=0, epochs=1).fit(rng.normal(size=(60, 3))).config_.variance_floor
    binary = (blobs(60, 0) > 0.5).astype(float)
    detector = VAEAnomalyDetector(random_state=0, epochs=1, input_shape=(1, 12, 12)).fit(binary)
    assert detector.likelihood_ == "bernoulli" and not detector.config_.variance_floor
    assert "variance_floor" not in detector.config_.to_dict()  # its file reads as before the floor
