"""The local pixel-context model and the "ratio" score built on it."""

import numpy as np
import pytest
import torch

from vaeguard import VAEAnomalyDetector
from vaeguard.complexity import CONTEXT_OFFSETS, LocalContextModel, local_nll
from vaeguard.model import VAE, VAEConfig
from vaeguard.scoring import ScoreState, anomaly_scores

FAST = dict(latent_dim=2, hidden_dims=(16,), epochs=2, batch_size=16, fpr=0.1, random_state=0, device="cpu")


def _stripes(n: int, side: int = 16, seed: int = 0) -> np.ndarray:
    """Images of vertical bars of random width and position: simple, local structure."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n, side, side), dtype=np.float32)
    for img in X:
        start = rng.integers(0, side - 4)
        img[:, start : start + rng.integers(1, 4)] = 1.0
    return X.reshape(n, -1)


def test_contexts_read_the_causal_neighbours():
    model = LocalContextModel((1, 3, 3))
    x = torch.zeros(1, 9)
    x[0, 4] = 1.0  # the centre pixel (1, 1)
    ctx = model.contexts(x).view(3, 3)
    # pixel (r, c) sees the centre through the offset (1 - r, 1 - c) when it is one of its own
    for bit, (dr, dc) in enumerate(CONTEXT_OFFSETS):
        assert ctx[1 - dr, 1 - dc] & (1 << bit)
    assert ctx[0, 0] == ctx[0, 1] == ctx[0, 2] == ctx[1, 0] == 0  # earlier pixels see nothing


def test_each_channel_has_its_own_table():
    model = LocalContextModel((2, 3, 3))
    x = torch.zeros(1, 18)
    x[0, 4] = x[0, 9 + 4] = 1.0  # the centre pixel of both channels
    ctx = model.contexts(x).view(2, 9)
    assert torch.equal(ctx[1], ctx[0] + model.n_contexts)


def test_fit_gives_the_smoothed_mean_pixel_value_per_context():
    X = torch.tensor([[0.0, 1.0, 0.5, 0.0], [1.0, 1.0, 0.0, 0.2]])  # two 2x2 images
    model = LocalContextModel((1, 2, 2), smoothing=1.0)
    ctx = model.contexts(X).flatten()
    assert len(ctx.unique()) > 1
    model.fit(X)
    for c in ctx.unique():
        seen = X.flatten()[ctx == c]
        expected = (seen.sum() + 1.0) / (len(seen) + 2.0)
        assert torch.sigmoid(model.logits.flatten()[c]).item() == pytest.approx(expected.item(), rel=1e-6)


def test_local_nll_is_lower_for_images_like_the_training_data():
    train, like = _stripes(300), _stripes(50, seed=1)
    noise = (np.random.default_rng(2).random((50, 256)) > 0.5).astype(np.float32)
    scores = local_nll(np.vstack([like, noise]), (1, 16, 16), fit_on=train)
    assert scores[:50].max() < scores[50:].min()


def test_ratio_score_is_elbo_minus_the_context_nll_and_batch_independent():
    X = _stripes(120)
    model = VAE(VAEConfig(input_dim=256, latent_dim=2, hidden_dims=(8,)))
    state = ScoreState(image_shape=(1, 16, 16))
    state.context.fit(torch.as_tensor(X))
    ratio = anomaly_scores(model, X, "ratio", state=state)
    expected = anomaly_scores(model, X, "elbo") - local_nll(X, (1, 16, 16))
    np.testing.assert_allclose(ratio, expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(ratio[7:20], anomaly_scores(model, X[7:20], "ratio", state=state))


def test_ratio_score_needs_a_context_model():
    model = VAE(VAEConfig(input_dim=16, latent_dim=2, hidden_dims=(8,)))
    with pytest.raises(ValueError, match="needs a score state with a context model"):
        anomaly_scores(model, np.zeros((2, 16), np.float32), "ratio")
    with pytest.raises(ValueError, match="needs a score state with a context model"):
        anomaly_scores(model, np.zeros((2, 16), np.float32), "ratio", state=ScoreState(n_reference=3, latent_dim=2))


def test_context_model_config_is_checked():
    with pytest.raises(ValueError, match="needs input_shape"):
        ScoreState.from_config({"context_model": True}, likelihood="bernoulli", image_shape=None, latent_dim=2)
    with pytest.raises(ValueError, match="needs the bernoulli likelihood"):
        ScoreState.from_config({"context_model": True}, likelihood="gaussian", image_shape=(1, 4, 4), latent_dim=2)


def test_auto_score_is_ratio_for_near_binary_images_and_fused_for_grey_levels_and_tables():
    """And architecture="auto": the MLP for every input. Images are declared (input_shape)."""
    det = VAEAnomalyDetector(**FAST, input_shape=(1, 16, 16)).fit(_stripes(60))
    assert det.likelihood_ == "bernoulli" and det.score_type_ == "ratio" and det.score_state_.context is not None
    assert det.config_.architecture == "mlp"
    small = VAEAnomalyDetector(**FAST, input_shape=(1, 8, 8)).fit(_stripes(60, side=8))  # 8x8: too small for "ratio"
    assert small.score_type_ == "elbo" and small.score_state_.context is not None
    # the same bars in grey levels: no longer near 0 and 1, so gaussian and the fused score
    grey = _stripes(60) * 0.5 + 0.25
    grey_det = VAEAnomalyDetector(**FAST, input_shape=(1, 16, 16)).fit(grey)
    assert grey_det.likelihood_ == "gaussian" and grey_det.score_type_ == "fused"
    assert grey_det.score_state_.context is None and grey_det.score_state_.config()["latent_neighbours"] > 0
    assert grey_det.config_.architecture == "mlp" and grey_det.config_.input_shape is None
    conv = VAEAnomalyDetector(**FAST, input_shape=(1, 16, 16), architecture="conv").fit(grey)
    assert conv.config_.architecture == "conv" and conv.config_.input_shape == (1, 16, 16)
    table = VAEAnomalyDetector(**FAST).fit(np.random.default_rng(0).random((60, 10)))
    assert table.score_type_ == "fused" and table.score_state_.context is None and table.config_.architecture == "mlp"
    binary_table = VAEAnomalyDetector(**FAST).fit((np.random.default_rng(0).random((60, 10)) > 0.5) * 1.0)
    assert binary_table.likelihood_ == "bernoulli" and binary_table.score_type_ == "elbo"


@pytest.mark.parametrize("make", [lambda: _stripes(60), lambda: _stripes(60) * 0.5 + 0.25], ids=["binary", "grey"])
def test_a_square_table_is_a_table_unless_declared_an_image(make):
    """256 columns in [0, 1] (16x16 if they were pixels): fitted as they are, a table with the
    table defaults; only input_shape makes them an image."""
    from vaeguard.inputs import ImageInput, TableInput

    X = make()
    table = VAEAnomalyDetector(**FAST).fit(X)
    assert isinstance(table.input_spec_, TableInput) and table.input_spec_.columns[:2] == ("x0", "x1")
    assert table.config_.architecture == "mlp" and table.config_.input_shape is None
    assert table.score_state_.context is None
    assert table.score_type_ == ("elbo" if table.likelihood_ == "bernoulli" else "fused")  # never "ratio"
    image = VAEAnomalyDetector(**FAST, input_shape=(1, 16, 16)).fit(X)
    assert image.input_spec_ == ImageInput((1, 16, 16))
    assert image.score_type_ == ("ratio" if image.likelihood_ == "bernoulli" else "fused")
    assert image.config_.architecture == "mlp"
    with pytest.raises(ValueError, match="architecture='conv' needs images: pass input_shape"):
        VAEAnomalyDetector(**FAST, architecture="conv").fit(X)
    with pytest.raises(ValueError, match=r"input_shape \(1, 8, 8\) holds 64 values, but X has 256 features"):
        VAEAnomalyDetector(**FAST, input_shape=(1, 8, 8)).fit(X)


def test_explicit_ratio_on_tables_is_a_clear_error():
    with pytest.raises(ValueError, match="ratio.*images"):
        VAEAnomalyDetector(**FAST, score_type="ratio").fit(np.random.default_rng(0).random((60, 10)))
