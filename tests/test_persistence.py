"""The estimator's fitted state, saved and loaded (vaeguard.persistence, modelfile.FittedState),
and the score state beside the network (scoring.ScoreState): same scores, one build, one
memory estimate per scorer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from vaeguard import footprint, scorer, scoring
from vaeguard.errors import DataError, ModelFileError
from vaeguard.estimator import VAEAnomalyDetector, load
from vaeguard.model import VAE, VAEConfig
from vaeguard.modelfile import FittedState, read_model_file, write_model_file
from vaeguard.scorer import Scorer

SMALL = dict(epochs=2, hidden_dims=(16,), latent_dim=3, random_state=0, threads=1, device="cpu")


def _table(n=300, seed=0):
    X = np.random.default_rng(seed).normal(size=(n, 6))
    X[:, 1] = 2 * X[:, 0] + 0.1 * X[:, 1]
    return X


def _digits():
    return load_digits().data / 16.0


# name: (parameters, training rows, rows to score, the score type "auto" or the option resolves to)
MODELS = {
    "table default": (SMALL, _table(), _table(40, seed=1) * 1.5, "fused"),
    "digits 8x8 default": (dict(SMALL, input_shape=(1, 8, 8)), _digits()[:300], _digits()[1000:1040], "fused"),
    "ratio": (dict(SMALL, input_shape=(1, 8, 8), likelihood="bernoulli", score_type="ratio"), _digits()[:300], _digits()[1000:1040], "ratio"),
    "fused on pixels": (dict(SMALL, likelihood="bernoulli", score_type="fused"), _digits()[:300], _digits()[1000:1040], "fused"),
    "iwae": (dict(SMALL, score_type="iwae", n_importance_samples=8), _table(), _table(40, seed=1), "iwae"),
}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Each model fitted once, with its scores and its saved file."""
    out = {}
    folder = tmp_path_factory.mktemp("models")
    for name, (params, X, Q, _) in MODELS.items():
        with pytest.warns(UserWarning, match="too few"):
            det = VAEAnomalyDetector(**params).fit(X)
        path = det.save(folder / f"{name.replace(' ', '_')}.vgm")
        out[name] = (det, Q, path)
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_loaded_files_score_bit_identically(fitted, name):
    det, Q, path = fitted[name]
    assert det.score_type_ == MODELS[name][3]
    scores = det.anomaly_score(Q)
    for loaded in (load(path).anomaly_score, Scorer.load(path).anomaly_score, det.scorer().anomaly_score):
        np.testing.assert_array_equal(loaded(Q), scores)
    again = load(path)
    np.testing.assert_array_equal(again.feature_scores(Q), det.feature_scores(Q))
    np.testing.assert_array_equal(again.encode(Q), det.encode(Q))
    assert again.threshold_ == det.threshold_ and again.offset_ == det.offset_
    np.testing.assert_array_equal(again.calibration_scores_, det.calibration_scores_)


@pytest.mark.parametrize("name", list(MODELS))
def test_scoring_in_chunks_gives_the_scores_of_one_pass(fitted, name, monkeypatch):
    """Scorer prepares and scores CHUNK_VALUES values at a time, in whole blocks, so that
    chunking changes no row's score or feature scores."""
    _, Q, path = fitted[name]
    many = np.tile(Q, (70, 1))  # 2,800 rows
    monkeypatch.setattr(scorer, "CHUNK_VALUES", 1 << 40)
    one_pass = Scorer.load(path)
    assert one_pass.chunk_rows >= len(many)
    monkeypatch.setattr(scorer, "CHUNK_VALUES", 1)  # one block a chunk
    chunked = Scorer.load(path)
    assert chunked.chunk_rows < len(many) and chunked.chunk_rows % chunked.rows == 0
    if chunked.score_type == "iwae":
        assert chunked.chunk_rows % scoring.iwae_rows(chunked.n_importance_samples) == 0
    scores, features = chunked.score_and_explain(many)
    expected_scores, expected_features = one_pass.score_and_explain(many)
    np.testing.assert_array_equal(scores, expected_scores)
    np.testing.assert_array_equal(features, expected_features)


def test_loading_a_model_file_does_not_import_sympy(fitted):
    """Filling the meta-built model with to_empty went through torch's reference ops, whose
    first use imports sympy: about 0.5 s of every `vaeguard score` start-up. Loading assigns
    the file's arrays instead (a fresh process: this one has imported sympy long ago)."""
    _, Q, path = fitted["digits 8x8 default"]
    code = (
        "import sys, numpy as np; from vaeguard.scorer import Scorer; "
        "assert 'sympy' not in sys.modules; scorer = Scorer.load(sys.argv[1]); "
        "scorer.anomaly_score(np.load(sys.argv[2])); print('sympy' in sys.modules)"
    )
    rows = Path(path).with_suffix(".rows.npy")
    np.save(rows, Q)
    out = subprocess.run([sys.executable, "-c", code, str(path), str(rows)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_vae_holds_no_score_state_and_the_file_keeps_its_layout(fitted):
    """The network is the VAE alone; the score state travels where format 2 put it (tensors
    model.context.* and model.neighbours.*, its shape in model_config), so older readers agree."""
    assert {"context_model", "latent_neighbours"}.isdisjoint(VAEConfig(input_dim=4).to_dict())
    for name, expected in (("ratio", {"model.context.logits"}), ("table default", {"model.neighbours.codes", "model.neighbours.center", "model.neighbours.scale"})):
        det, _, path = fitted[name]
        assert not any(k.startswith(("context.", "neighbours.")) for k in det.model_.state_dict())
        description, arrays = read_model_file(path)
        assert expected <= set(arrays)
        assert description["model_config"]["context_model"] is (name == "ratio")
        assert description["model_config"]["latent_neighbours"] == (0 if name == "ratio" else len(det.score_state_.neighbours.codes))


def test_every_fitted_attribute_is_listed_once_in_the_fitted_state(fitted):
    """A new fitted attribute must be added to FittedState (saved) or to this list of those that are not."""
    det = fitted["table default"][0]
    not_saved = {"config_", "model_", "score_state_", "device_", "offset_", "decision_scores_", "labels_"}
    learned = set(FittedState.learned().values())
    attributes = {a for a in vars(det) if a.endswith("_") and not a.startswith("_")}
    assert attributes - not_saved <= learned and not learned & not_saved
    # set only with named columns (scikit-learn's rule) and by load (the file's metadata)
    assert learned - attributes == {"feature_names_in_", "metadata_"}


def _count_vae_builds(monkeypatch) -> list[int]:
    builds = [0]
    original = VAE.__init__

    def counting(self, cfg):
        builds[0] += 1
        original(self, cfg)

    monkeypatch.setattr(VAE, "__init__", counting)
    footprint._FOOTPRINTS.clear()  # a cold start: no memory estimate kept from earlier tests
    return builds


@pytest.mark.parametrize("reader", [load, Scorer.load], ids=["estimator", "scorer"])
def test_loading_builds_the_vae_once(fitted, monkeypatch, reader):
    det, Q, path = fitted["digits 8x8 default"]
    builds = _count_vae_builds(monkeypatch)
    loaded = reader(path)
    loaded.anomaly_score(Q)
    assert builds[0] == 1


def test_the_memory_budget_is_estimated_once_per_scorer(fitted, monkeypatch):
    det, Q, path = fitted["table default"]
    estimates = []
    original = scoring.check_model_size
    monkeypatch.setattr(scoring, "check_model_size", lambda *a, **k: estimates.append(1) or original(*a, **k))
    scorer = Scorer.load(path)
    chunks = [scorer.score_and_explain(Q[i : i + 7]) for i in range(0, len(Q), 7)]
    assert len(chunks) == 6 and len(estimates) == 1
    np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]), det.anomaly_score(Q))


def test_a_model_over_the_memory_budget_is_still_refused_on_every_scoring_call(fitted, monkeypatch):
    _, Q, path = fitted["table default"]
    scorer = Scorer.load(path)
    monkeypatch.setattr("vaeguard.limits.MEMORY_BUDGET_BYTES", 1000)
    for _ in range(2):
        with pytest.raises(DataError, match="over the memory budget of"):
            scorer.anomaly_score(Q)
    monkeypatch.undo()
    assert np.isfinite(scorer.anomaly_score(Q)).all()


def _rewritten(path, tmp_path, change):
    description, arrays = read_model_file(path)
    change(description, arrays)
    return write_model_file(tmp_path / "changed.vgm", description, arrays)


def test_a_score_state_the_model_cannot_hold_is_a_one_line_model_file_error(fitted, tmp_path):
    _, _, table = fitted["table default"]

    def context_on_a_table(description, arrays):
        description["model_config"]["context_model"] = True

    with pytest.raises(ModelFileError, match=r"changed.vgm does not describe a valid vaeguard model: the context model needs input_shape") as info:
        load(_rewritten(table, tmp_path, context_on_a_table))
    assert "\n" not in str(info.value)

    def huge_reference(description, arrays):
        description["model_config"]["latent_neighbours"] = 10**12  # refused by shape, never allocated

    with pytest.raises(ModelFileError, match=r"tensor 'neighbours.codes' has shape \[\d+, 3\] in the file"):
        Scorer.load(_rewritten(table, tmp_path, huge_reference))
