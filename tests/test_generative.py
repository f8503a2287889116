"""The generative side: decode, sample, interpolate, traverse; PyOD / scikit-learn interop;
the report section and the `sample` / `interpolate` commands."""

import math
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from typer.testing import CliRunner

from vaeguard import DataError, VAEAnomalyDetector
from vaeguard.cli import app
from vaeguard.generative import interpolate_codes, traverse_codes
from vaeguard.digits import embedded_digits, run_heldout_digits
from vaeguard.plots import LATENT_MAPS, image_strips_figure, latent_figure, marginals_figure, rows_as_images, sample_grid_figure
from vaeguard.report import write_report

runner = CliRunner()
SMALL = dict(hidden_dims=(64,), latent_dim=4, epochs=30, random_state=0, fpr=0.05)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


@pytest.fixture(scope="module")
def image_model(digits):
    X, y = digits
    # bernoulli named: the 8x8 digits' 17 grey levels would get the gaussian by default
    return VAEAnomalyDetector(**SMALL, likelihood="bernoulli", input_shape=(1, 8, 8)).fit(X[y < 5])


def low_rank_table(n, rng, loc=1000.0, scale=50.0):
    """Five correlated features with mean `loc` and standard deviation about `scale`."""
    z = rng.normal(size=(n, 2))
    X = np.column_stack([z[:, 0], z[:, 1], (z[:, 0] + z[:, 1]) / math.sqrt(2), (z[:, 0] - z[:, 1]) / math.sqrt(2), z[:, 0]])
    return loc + scale * (X + rng.normal(scale=0.1, size=X.shape))


COLUMNS = ["a", "b", "c", "d", "e"]


@pytest.fixture(scope="module")
def table():
    return pd.DataFrame(low_rank_table(1000, np.random.default_rng(0)), columns=COLUMNS)


@pytest.fixture(scope="module")
def table_model(table):
    return VAEAnomalyDetector(hidden_dims=(32,), latent_dim=2, epochs=60, random_state=0).fit(table)


# ----------------------------------------------------------------------------- pure functions


def test_slerp_keeps_the_prior_norm_and_linear_cuts_inside():
    d = 16
    z_a, z_b = np.zeros(d), np.zeros(d)
    z_a[0], z_b[1] = math.sqrt(d), math.sqrt(d)  # orthogonal, both at the typical norm
    slerp = interpolate_codes(z_a, z_b, 5, "slerp")
    linear = interpolate_codes(z_a, z_b, 5, "linear")
    np.testing.assert_allclose(np.linalg.norm(slerp, axis=1), math.sqrt(d), rtol=1e-12)
    assert np.linalg.norm(linear[2]) == pytest.approx(math.sqrt(d / 2))
    for path in (slerp, linear):
        assert np.array_equal(path[0], z_a) and np.array_equal(path[-1], z_b)
    # Different norms: slerp's norm moves linearly from one to the other.
    norms = np.linalg.norm(interpolate_codes(z_a, 3 * z_b, 3, "slerp"), axis=1)
    np.testing.assert_allclose(norms, [4.0, 8.0, 12.0])
    # Parallel codes: the circle is undefined, slerp falls back to the line.
    np.testing.assert_allclose(interpolate_codes(z_a, 2 * z_a, 3, "slerp"), interpolate_codes(z_a, 2 * z_a, 3, "linear"))


def test_code_helpers_reject_bad_arguments():
    with pytest.raises(ValueError, match="method must be one of"):
        interpolate_codes(np.ones(2), np.ones(2), 3, "cubic")
    with pytest.raises(ValueError, match="steps must be at least 2"):
        interpolate_codes(np.ones(2), np.ones(2), 1)
    out = traverse_codes(np.array([1.0, 2.0, 3.0]), 1, [-1.0, 0.0, 5.0])
    assert np.array_equal(out, [[1, -1, 3], [1, 0, 3], [1, 5, 3]])


# ----------------------------------------------------------------------------- estimator API


def test_sample_is_seeded_and_shaped(image_model):
    s = image_model.sample(10)
    assert s.shape == (10, 64) and s.dtype == np.float64
    assert s.min() >= 0.0 and s.max() <= 1.0  # images: pixel values in [0, 1]
    assert np.array_equal(s, image_model.sample(10))  # None: the detector's own seed
    assert np.array_equal(image_model.sample(10, random_state=7), image_model.sample(10, random_state=7))
    assert not np.allclose(image_model.sample(10, random_state=7), image_model.sample(10, random_state=8))
    drawn = image_model.sample(10, random_state=7, mean=False)
    assert set(np.unique(drawn)) <= {0.0, 1.0}  # Bernoulli draws
    assert np.array_equal(drawn, image_model.sample(10, random_state=7, mean=False))


def test_samples_look_like_the_training_digits(digits, image_model):
    X, y = digits
    samples = image_model.sample(500, random_state=0)
    # Where the ink falls matches the real normal digits (measured: correlation 0.99 of the
    # per-pixel means); decoder means from the prior of this small, short-trained model are
    # greyer than real digits (measured: mean ink 0.41 against 0.30).
    assert np.corrcoef(samples.mean(0), X[y < 5].mean(0))[0, 1] > 0.9
    assert abs(samples.mean() - X[y < 5].mean()) < 0.15
    assert samples.std(axis=0).mean() > 0.05  # not one image repeated (measured 0.11)


def test_table_samples_come_back_in_the_units_of_x(table, table_model):
    drawn = table_model.sample(4000, random_state=0, mean=False)
    assert drawn.shape == (4000, 5)
    # Data: mean 1000, standard deviation about 50 per feature.
    np.testing.assert_allclose(drawn.mean(0), table.mean(axis=0), atol=0.2 * 50)
    np.testing.assert_allclose(drawn.std(0), table.std(axis=0), rtol=0.25)
    means = table_model.sample(4000, random_state=0)  # decoder means: same centre, less spread
    np.testing.assert_allclose(means.mean(0), table.mean(axis=0), atol=0.2 * 50)
    assert np.all(means.std(0) < drawn.std(0))
    # The decoder learned the structure: column e is a noisy copy of column a (measured
    # 0.9996; the draws add the learned per-feature noise on top).
    assert np.corrcoef(means[:, 0], means[:, 4])[0, 1] > 0.95


def test_decode_of_the_posterior_mean_is_the_reconstruction(digits, image_model, table, table_model):
    X, _ = digits
    np.testing.assert_allclose(image_model.decode(image_model.encode(X[:20])), image_model.reconstruct(X[:20]), atol=1e-6)
    np.testing.assert_allclose(table_model.decode(table_model.encode(table[:20])), table_model.reconstruct(table[:20]), atol=1e-3)
    assert table_model.decode(np.zeros(2)).shape == (1, 5)  # one code as a 1-D row


def test_interpolation_ends_at_the_reconstructions(digits, image_model):
    X, _ = digits
    recon = image_model.reconstruct(X[:2])
    for method in ("slerp", "linear"):
        path = image_model.interpolate(X[0], X[1], steps=6, method=method)
        assert path.shape == (6, 64)
        np.testing.assert_allclose(path[0], recon[0], atol=1e-5)
        np.testing.assert_allclose(path[-1], recon[1], atol=1e-5)
    slerp = image_model.interpolate(X[0], X[1], steps=6)
    linear = image_model.interpolate(X[0], X[1], steps=6, method="linear")
    assert np.abs(slerp[2:4] - linear[2:4]).max() > 1e-3  # the two paths differ in between
    # One-row 2-D arrays and DataFrames work as well as 1-D rows.
    np.testing.assert_allclose(image_model.interpolate(X[:1], X[1:2], steps=6), slerp)


def test_interpolation_of_dataframe_rows(table, table_model):
    path = table_model.interpolate(table.iloc[0], table.iloc[[1]], steps=4)
    np.testing.assert_allclose(path[[0, -1]], table_model.reconstruct(table.iloc[:2]), atol=1e-3)


def test_traverse_changes_one_dimension(digits, image_model):
    X, _ = digits
    z = image_model.encode(X[:1])[0]
    rows = image_model.traverse(X[0], 2, [-2.0, z[2], 2.0])
    assert rows.shape == (3, 64)
    np.testing.assert_allclose(rows[1], image_model.reconstruct(X[:1])[0], atol=1e-5)
    assert image_model.traverse(X[0], 0).shape == (7, 64)  # default: -3..3 in 7 steps
    dims = image_model.active_dims(X[:200])
    assert sorted(dims) == [0, 1, 2, 3]


def test_errors_before_fit():
    detector = VAEAnomalyDetector()
    x = np.zeros(4)
    for call in (
        lambda: detector.sample(3),
        lambda: detector.decode(np.zeros((1, 16))),
        lambda: detector.interpolate(x, x),
        lambda: detector.traverse(x, 0),
        lambda: detector.predict_proba(x[None]),
        lambda: detector.get_feature_names_out(),
        lambda: detector.feature_scores(x[None], as_frame=True),
        lambda: detector.active_dims(x[None]),
        # Not new, but they raised AttributeError before: the same rule for every method.
        lambda: detector.feature_scores(x[None]),
        lambda: detector.encode(x[None]),
        lambda: detector.reconstruct(x[None]),
        lambda: detector.p_values(x[None]),
    ):
        with pytest.raises(NotFittedError):
            call()


def test_errors_name_the_argument(digits, image_model):
    X, _ = digits
    cases = [
        (lambda: image_model.sample(0), ValueError, "n must be an integer >= 1"),
        (lambda: image_model.sample(3, random_state="x"), ValueError, "random_state must be"),
        (lambda: image_model.decode(np.zeros((2, 5))), DataError, r"Z must have shape \(n, 4\)"),
        (lambda: image_model.decode(np.full((1, 4), np.nan)), DataError, "Z holds 4 NaN"),
        (lambda: image_model.interpolate(X[0, :10], X[1]), DataError, "x_a has 10 values, but the model expects 64"),
        (lambda: image_model.interpolate(X[0], X[1:3]), DataError, "x_b must be one sample"),
        (lambda: image_model.interpolate(X[0], X[1], steps=1), ValueError, "steps must be an integer >= 2"),
        (lambda: image_model.interpolate(X[0], X[1], method="cubic"), ValueError, "method must be one of"),
        (lambda: image_model.traverse(X[0], 4), ValueError, r"dim must be an integer in \[0, 3\]"),
        (lambda: image_model.traverse(X[0], 0, []), DataError, "values must be a non-empty"),
        (lambda: image_model.interpolate(X[0] * 2 + 1, X[1]), DataError, "needs values in"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


# ----------------------------------------------------------------------------- interop


def test_pyod_attributes_after_fit(digits, image_model):
    X, y = digits
    X_fit = X[y < 5]
    np.testing.assert_allclose(image_model.decision_scores_, image_model.anomaly_score(X_fit), rtol=1e-6)
    assert set(np.unique(image_model.labels_)) <= {0, 1}
    assert np.array_equal(image_model.labels_, (image_model.decision_scores_ > image_model.threshold_).astype(int))
    assert np.array_equal(image_model.labels_ == 1, image_model.predict(X_fit) == -1)


def test_labels_follow_the_threshold_and_contamination(digits):
    X, y = digits
    detector = VAEAnomalyDetector(**{**SMALL, "epochs": 5}, contamination=0.1).fit(X[y < 5])
    assert detector.labels_.mean() == pytest.approx(0.1, abs=0.01)
    detector.set_threshold(fpr=0.5)
    assert detector.labels_.mean() > 0.3  # recomputed at the new threshold


def test_predict_proba_is_one_minus_the_p_value(digits, image_model):
    X, _ = digits
    proba = image_model.predict_proba(X[:50])
    assert proba.shape == (50, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_allclose(proba[:, 1], 1.0 - image_model.p_values(X[:50]))
    scores = image_model.anomaly_score(X[:50])
    order = np.argsort(scores)
    assert np.all(np.diff(proba[order, 1]) >= 0)  # more anomalous, more evidence


def test_feature_names_for_feature_scores(digits, image_model, table, table_model):
    assert list(table_model.get_feature_names_out()) == COLUMNS
    frame = table_model.feature_scores(table.iloc[5:8], as_frame=True)
    assert list(frame.columns) == COLUMNS and list(frame.index) == [5, 6, 7]
    np.testing.assert_allclose(frame.to_numpy(), table_model.feature_scores(table.iloc[5:8]))
    X, _ = digits
    assert list(image_model.get_feature_names_out()[:2]) == ["x0", "x1"]
    assert list(image_model.feature_scores(X[:2], as_frame=True).columns[-1:]) == ["x63"]


# ----------------------------------------------------------------------------- plots and report


def test_generative_figures_and_errors():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(5, 8, 8))
    for fig in (
        sample_grid_figure(images),
        image_strips_figure([images, images[:3]], ["a", "b"], "t", ["1", "2"]),
        marginals_figure(rng.normal(size=(50, 3)), rng.normal(size=(40, 3)), ["p", "q", "r"]),
        sample_grid_figure(rng.uniform(size=(3, 4, 4, 3))),  # RGB
    ):
        assert fig.axes
    assert rows_as_images(np.zeros((2, 3 * 4 * 5)), (3, 4, 5)).shape == (2, 4, 5, 3)
    assert rows_as_images(np.zeros((2, 20)), (1, 4, 5)).shape == (2, 4, 5)
    with pytest.raises(DataError, match="are not flat 1x4x4"):
        rows_as_images(np.zeros((2, 20)), (1, 4, 4))
    with pytest.raises(DataError, match="row_labels has 1 entries"):
        image_strips_figure([images, images], ["a"], "t")
    with pytest.raises(DataError, match="different shapes"):
        image_strips_figure([images, images[:, :4]], ["a", "b"], "t")
    with pytest.raises(DataError, match="same columns"):
        marginals_figure(np.zeros((5, 3)), np.zeros((5, 2)))


def test_umap_without_umap_learn_is_a_clear_error(monkeypatch):
    assert "umap" in LATENT_MAPS
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    with pytest.raises(ValueError, match=r"pip install 'vaeguard\[umap\]'"):
        latent_figure(np.zeros((10, 3)), np.zeros(10), method="umap")
    result = invoke("digits", "-o", "unused", "--latent-map", "umap")
    assert result.exit_code == 1 and "vaeguard[umap]" in result.output


@pytest.mark.slow  # numba compiles UMAP on first use: about a minute
def test_umap_latent_map():
    pytest.importorskip("umap")
    means = np.random.default_rng(0).normal(size=(40, 3))
    fig = latent_figure(means, np.arange(40) % 2, method="umap")
    assert fig.axes[0].get_xlabel() == "UMAP 1"


def test_digit_report_shows_the_generative_section(tmp_path):
    data = embedded_digits()
    run_heldout_digits(data, [0, 1, 2, 3, 4], VAEAnomalyDetector(**SMALL), tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert 'id="generative"' in page
    generative = page[page.index('id="generative"'):]
    for name in ("latent.png", "samples.png", "interpolations.png", "traversals.png"):
        assert (tmp_path / name).stat().st_size > 1000
        assert f'alt="{name}"' in generative  # in the section, beside the latent map
    with Image.open(tmp_path / "samples.png") as image:
        assert image.width > 500


def test_table_report_shows_sampled_marginals(tmp_path, table, table_model):
    from vaeguard.gallery import table_gallery

    y = np.r_[np.zeros(50), np.ones(50)]
    scores = np.r_[np.arange(50), np.arange(50) + 30.0]
    write_report(tmp_path, y, scores, generative=table_gallery(table_model, table))
    page = (tmp_path / "report.html").read_text()
    assert 'alt="marginals.png"' in page[page.index('id="generative"'):]


# ----------------------------------------------------------------------------- command line


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def cli_models(tmp_path_factory, digits, image_model):
    root = tmp_path_factory.mktemp("generative")
    image_model.save(root / "digits.vgm", metadata={"input": {"kind": "images", "shape": [1, 8, 8]}})
    X, y = digits
    for i in (0, 1):
        Image.fromarray((X[i].reshape(8, 8) * 255).round().astype(np.uint8)).save(root / f"digit{i}.png")
    frame = pd.DataFrame(low_rank_table(600, np.random.default_rng(1)), columns=COLUMNS)
    frame["e"] = frame["e"].round().astype(int)  # an integer column
    frame.insert(0, "id", [f"r{i}" for i in range(len(frame))])
    frame.to_csv(root / "rows.csv", index=False)
    frame.drop(columns="id").to_csv(root / "noid.csv", index=False)
    result = invoke("-q", "train", root / "rows.csv", "-o", root / "table.vgm", "--id-column", "id",
                    "--hidden-dims", "32", "--latent-dim", "2", "--epochs", "60", "--seed", "0")
    assert result.exit_code == 0, result.output
    result = invoke("-q", "train", root / "noid.csv", "-o", root / "noid.vgm",
                    "--hidden-dims", "16", "--latent-dim", "2", "--epochs", "5", "--seed", "0")
    assert result.exit_code == 0, result.output
    return root


def test_cli_sample_images_writes_a_png_grid(cli_models):
    out = cli_models / "grid.png"
    result = invoke("sample", cli_models / "digits.vgm", "-o", out, "--n", "16", "--seed", "1")
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 300


def test_cli_sample_table_writes_rows_in_original_names_and_units(cli_models):
    out, again, other = (cli_models / f"{name}.csv" for name in ("s1", "s2", "s3"))
    for path, seed in ((out, 3), (again, 3), (other, 4)):
        result = invoke("sample", cli_models / "table.vgm", "-o", path, "--n", "2000", "--seed", seed, "--draw")
        assert result.exit_code == 0, result.output
    rows = pd.read_csv(out)
    assert list(rows.columns) == COLUMNS and len(rows) == 2000
    assert rows["e"].dtype.kind == "i"  # integer column stays integer
    real = pd.read_csv(cli_models / "rows.csv")[COLUMNS]
    np.testing.assert_allclose(rows.mean(), real.mean(), atol=0.2 * 50)
    np.testing.assert_allclose(rows.std(), real.std(), rtol=0.25)
    assert out.read_bytes() == again.read_bytes()
    assert out.read_bytes() != other.read_bytes()


def test_cli_interpolate_images_and_rows(cli_models):
    out = cli_models / "strip.png"
    result = invoke("interpolate", cli_models / "digits.vgm", cli_models / "digit0.png", cli_models / "digit1.png",
                    "-o", out, "--steps", "6")
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        assert image.format == "PNG"
    path_csv = cli_models / "path.csv"
    result = invoke("interpolate", cli_models / "table.vgm", "r3", "r7", "--data", cli_models / "rows.csv",
                    "-o", path_csv, "--steps", "5", "--method", "linear")
    assert result.exit_code == 0, result.output
    path = pd.read_csv(path_csv)
    assert list(path.columns) == ["t", *COLUMNS] and list(path["t"]) == [0, 0.25, 0.5, 0.75, 1]
    assert np.all(np.abs(path[["a", "b", "c", "d"]].to_numpy() - 1000) < 400)  # original units
    # Without an id column, A and B are 1-based row numbers as in `vaeguard score` output.
    result = invoke("interpolate", cli_models / "noid.vgm", "1", "600", "--data", cli_models / "noid.csv", "-o", path_csv)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["sample", "{root}/digits.vgm", "-o", "{root}/x.csv"], 2, "an image model writes a PNG grid"),
        (["sample", "{root}/table.vgm", "-o", "{root}/x.png"], 2, "writes generated rows as CSV"),
        (["sample", "{root}/missing.vgm", "-o", "{root}/x.png"], 1, "does not exist"),
        (["sample", "{root}/digits.vgm", "-o", "{root}/x.png", "--n", "0"], 2, "--n"),
        (["interpolate", "{root}/table.vgm", "r1", "r2", "-o", "{root}/x.csv"], 2, "--data"),
        (["interpolate", "{root}/table.vgm", "r1", "zz", "--data", "{root}/rows.csv", "-o", "{root}/x.csv"], 1, "no row with id = 'zz'"),
        (["interpolate", "{root}/noid.vgm", "1", "601", "--data", "{root}/noid.csv", "-o", "{root}/x.csv"], 1, "row 601 does not exist"),
        (["interpolate", "{root}/digits.vgm", "{root}/digit0.png", "{root}/nope.png", "-o", "{root}/x.png"], 1, "nope.png"),
        (["interpolate", "{root}/digits.vgm", "{root}/digit0.png", "{root}/digit1.png", "-o", "{root}/x.png", "--method", "cubic"], 2, "--method"),
    ],
)
def test_cli_generative_errors_are_one_line(cli_models, args, code, message):
    result = invoke(*[a.format(root=cli_models) for a in args])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    if code == 1:
        assert len(result.output.strip().splitlines()) == 1


def test_a_model_trained_from_a_csv_names_its_features(cli_models):
    import vaeguard

    detector = vaeguard.load(cli_models / "table.vgm")
    assert list(detector.get_feature_names_out()) == COLUMNS
    rows = pd.read_csv(cli_models / "rows.csv")[COLUMNS].iloc[:3].to_numpy()  # fitted on an array: no names
    assert list(detector.feature_scores(rows, as_frame=True).columns) == COLUMNS
