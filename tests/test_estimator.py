"""VAEAnomalyDetector behaves like a scikit-learn outlier detector and detects anomalies."""

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import vaeguard
from vaeguard import DataError, VAEAnomalyDetector
from vaeguard.digits import embedded_digits

FAST = dict(latent_dim=4, hidden_dims=(32,), epochs=3, batch_size=16, random_state=0, device="cpu")


@parametrize_with_checks([VAEAnomalyDetector(**FAST)])
def test_sklearn_conformance(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check(estimator)


@pytest.fixture(scope="module")
def digits():
    return embedded_digits()


@pytest.fixture(scope="module")
def digits_detector(digits):
    """Fit on digits 0-4 of the embedded 8x8 set; 5-9 are the anomalies."""
    normal = digits.y_train < 5
    det = VAEAnomalyDetector(epochs=100, input_shape=(1, 8, 8), random_state=0, device="cpu")
    return det.fit(digits.X_train[normal])


def test_separates_held_out_digits_well_above_chance(digits, digits_detector):
    is_anomaly = digits.y_test >= 5
    auroc = roc_auc_score(is_anomaly, digits_detector.anomaly_score(digits.X_test))
    assert auroc > 0.85  # measured 0.917 with this configuration (the conv, the default before #23: 0.915; 0.919 before the pixel range, 0.898 before the pixel floor)


def test_score_conventions_are_consistent(digits, digits_detector):
    X = digits.X_test
    det = digits_detector
    np.testing.assert_allclose(det.score_samples(X), -det.anomaly_score(X))
    np.testing.assert_allclose(det.decision_function(X), det.score_samples(X) - det.offset_)
    np.testing.assert_array_equal(det.predict(X) == -1, det.anomaly_score(X) > det.threshold_)
    p = det.p_values(X)
    assert ((p > 0) & (p <= 1)).all()
    assert np.corrcoef(p, det.anomaly_score(X))[0, 1] < 0
    # and they point the right way: held-out digits get small p-values (medians 0.077 and 0.505)
    held_out = digits.y_test >= 5
    assert np.median(p[held_out]) < np.median(p[~held_out]) - 0.25


def test_feature_scores_sum_to_reconstruction_part(digits, digits_detector):
    from vaeguard.scoring import anomaly_scores

    X = digits.X_test[:50]
    fs = digits_detector.feature_scores(X)
    assert fs.shape == X.shape
    # the model sees standardised rows when the detector standardises (gaussian likelihood)
    recon = anomaly_scores(digits_detector.model_, digits_detector._standardize(X), "recon")
    np.testing.assert_allclose(fs.sum(1), recon, rtol=1e-5)


def test_same_random_state_gives_bit_identical_scores(digits):
    X = digits.X_train[digits.y_train < 3]
    a = VAEAnomalyDetector(**dict(FAST, epochs=5)).fit(X).score_samples(digits.X_test)
    b = VAEAnomalyDetector(**dict(FAST, epochs=5)).fit(X).score_samples(digits.X_test)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("config", ["default", "iwae", "ratio"])
def test_saved_model_scores_identically_after_load(tmp_path, digits, digits_detector, config):
    """One round trip per kind of fitted state: the default (8x8 grey digits: the fused score
    and its latent neighbours), importance sampling, a context model."""
    if config == "default":
        det, X = digits_detector, digits.X_test
    elif config == "iwae":
        det = VAEAnomalyDetector(**dict(FAST, score_type="iwae", n_importance_samples=8)).fit(digits.X_train[:200])
        X = digits.X_test[:20]
    else:
        # binarised 8x8 digits as 16x16 rows: near-binary images, so the ratio score
        X = np.kron((digits.X_train[:120] > 0.5).astype(np.float64), np.ones((1, 4)))
        det = VAEAnomalyDetector(**FAST, input_shape=(1, 16, 16)).fit(X)
        assert det.score_type_ == "ratio"
    path = det.save(tmp_path / "m.vgm", metadata={"note": ["a", "b"]})
    loaded = vaeguard.load(path, device="cpu")
    np.testing.assert_array_equal(loaded.score_samples(X), det.score_samples(X))
    np.testing.assert_array_equal(loaded.predict(X), det.predict(X))
    np.testing.assert_array_equal(loaded.p_values(X), det.p_values(X))
    assert loaded.threshold_ == det.threshold_ and loaded.score_type_ == det.score_type_
    assert loaded.input_spec_ == det.input_spec_
    assert loaded.metadata_ == {"note": ["a", "b"]}
    assert loaded.history_["train_loss"] == det.history_["train_loss"]


def test_contamination_float_flags_that_share_of_training_data():
    X = np.random.default_rng(0).normal(size=(400, 5))
    det = VAEAnomalyDetector(**dict(FAST, contamination=0.1)).fit(X)
    assert (det.predict(X) == -1).mean() == pytest.approx(0.1, abs=0.01)
    assert det.likelihood_ == "gaussian"


def test_works_in_a_pipeline_and_a_grid_search(digits):
    X = digits.X_train[digits.y_train < 5]
    X_eval = digits.X_test
    y_eval = np.where(digits.y_test < 5, 1, -1)  # +1 normal, as predict() returns

    def auroc_scorer(estimator, X, y):
        return roc_auc_score(y, estimator.score_samples(X))

    pipe = make_pipeline(StandardScaler(), VAEAnomalyDetector(**dict(FAST, hidden_dims=(128,), latent_dim=8, epochs=60)))
    pipe.fit(X)
    assert roc_auc_score(y_eval, pipe.score_samples(X_eval)) > 0.75
    assert set(np.unique(pipe.predict(X_eval))) <= {-1, 1}

    X_search = np.vstack([X, X_eval])
    y_search = np.concatenate([np.ones(len(X)), y_eval])
    train_idx = np.arange(len(X))
    test_idx = np.arange(len(X), len(X_search))
    # One epoch leaves the model near its initialisation: the search must find that out.
    search = GridSearchCV(
        VAEAnomalyDetector(**dict(FAST, hidden_dims=(128,), latent_dim=8)),
        {"epochs": [1, 60]},
        scoring=auroc_scorer,
        cv=[(train_idx, test_idx)],
    )
    search.fit(X_search, y_search)
    one, sixty = search.cv_results_["mean_test_score"]
    assert search.best_params_ == {"epochs": 60}
    assert sixty > 0.75 and sixty > one + 0.05


@pytest.mark.parametrize(
    "X, message",
    [
        (np.array([[1.0, 1.0], [np.nan, np.nan], [1.0, 1.0]]), r"row 1: every feature cell is missing"),
        (np.array([[1.0, np.nan], [0.0, np.nan], [1.0, np.nan]]), r"column 'x1': every training cell is missing"),
        (np.array([[1.0, np.inf], [0.0, 1.0], [1.0, 1.0]]), "row 0, column 'x1': inf is not a finite number"),
        (np.array([[1.0, 1.0], [1e300, 1.0], [1.0, 1.0]]), r"row 1, column 'x0': 1e\+300 is too large \(beyond float32\)"),
        (np.empty((0, 3)), "0 sample"),
        (np.ones(5), "2D array"),
        (np.ones((4, 2, 2)), "dim"),
        (np.ones((2, 3)), "at least 3 samples"),
    ],
)
def test_bad_training_input_is_a_clear_value_error(X, message):
    with pytest.raises(ValueError, match=message):
        VAEAnomalyDetector(**FAST).fit(X)


def test_bad_scoring_input_is_a_clear_value_error(digits, digits_detector):
    with pytest.raises(ValueError, match="64 features"):
        digits_detector.score_samples(np.zeros((3, 10)))
    with pytest.raises(DataError, match=r"row 0: every feature cell is missing"):
        digits_detector.score_samples(np.full((2, 64), np.nan))
    bernoulli = VAEAnomalyDetector(**dict(FAST, likelihood="bernoulli")).fit(digits.X_train[:100])
    with pytest.raises(DataError, match=r"row 1, column 'x3' holds 2"):
        X = np.zeros((2, 64))
        X[1, 3] = 2.0
        bernoulli.score_samples(X)


@pytest.mark.parametrize(
    "param, value",
    [("latent_dim", 0), ("likelihood", "poisson"), ("score_type", "magic"), ("contamination", 0.7),
     ("fpr", 1.5), ("calibration_fraction", 0.0), ("device", "tpu")],
)
def test_bad_parameters_are_named(param, value):
    X = np.random.default_rng(0).random((30, 3))
    with pytest.raises(ValueError, match=param if param != "device" else "device"):
        VAEAnomalyDetector(**dict(FAST, **{param: value})).fit(X)


def test_bernoulli_requires_unit_range():
    with pytest.raises(DataError, match="likelihood='gaussian'"):
        VAEAnomalyDetector(**dict(FAST, likelihood="bernoulli")).fit(np.arange(30.0).reshape(10, 3))


def test_cuda_request_without_gpu_is_clear():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="CUDA"):
        VAEAnomalyDetector(**dict(FAST, device="cuda")).fit(np.random.default_rng(0).random((30, 3)))


def test_conv_architecture_on_images(digits):
    det = VAEAnomalyDetector(**dict(FAST, architecture="conv", hidden_dims=(32,), epochs=2, input_shape=(1, 8, 8)))
    det.fit(digits.X_train[:100])
    assert det.config_.input_shape == (1, 8, 8)
    assert det.score_samples(digits.X_test[:10]).shape == (10,)


def test_auto_epochs_and_patience_give_small_data_enough_gradient_steps(monkeypatch):
    from vaeguard import training
    from vaeguard.training import MAX_STEPS, MIN_PATIENCE_STEPS, MIN_STEPS, auto_epochs, auto_patience

    assert auto_epochs(100, 128) == MIN_STEPS  # one step per epoch
    assert auto_epochs(1_000, 128) == math.ceil(MIN_STEPS / 8)  # 8 steps per epoch
    assert auto_epochs(37_800, 128) == 50  # 296 steps per epoch (MNIST held-out): the plain default
    assert auto_epochs(140_000, 128) == math.ceil(MAX_STEPS / 1_094) == 14  # large data: the step budget
    assert auto_patience(100, 128) == MIN_PATIENCE_STEPS
    assert auto_patience(1_000, 128) == 13
    assert auto_patience(10_000, 128) == 10
    monkeypatch.setattr(training, "MIN_STEPS", 120)  # the fit below: 42 rows, one step per epoch
    X = np.random.default_rng(0).normal(size=(60, 3))
    det = VAEAnomalyDetector(latent_dim=2, hidden_dims=(8,), patience=5_000, random_state=0, device="cpu").fit(X)
    assert det.n_epochs_ == 120  # no early stop: the cap
    assert VAEAnomalyDetector(**dict(FAST, epochs=7)).fit(X).n_epochs_ <= 7  # an explicit cap stays
