"""The VAE itself: likelihoods, KL, architectures, the loss, and training failures."""

import numpy as np
import pytest
import torch
from torch import distributions as D

from vaeguard.errors import TrainingError
from vaeguard.model import VAE, VAEConfig, bernoulli_nll, gaussian_kl, gaussian_nll, has_nan
from vaeguard.scoring import anomaly_scores, feature_scores
from vaeguard.training import TrainConfig, train_vae


def test_likelihoods_match_torch_distributions():
    torch.manual_seed(0)
    x = torch.rand(5, 7)
    mean, logvar = torch.randn(5, 7), torch.randn(7)
    expected = -D.Normal(mean, torch.exp(0.5 * logvar)).log_prob(x)
    torch.testing.assert_close(gaussian_nll(x, mean, logvar), expected)
    binary, logits = (x > 0.5).float(), torch.randn(5, 7)
    torch.testing.assert_close(bernoulli_nll(binary, logits), -D.Bernoulli(logits=logits).log_prob(binary))


def test_kl_matches_torch_closed_form():
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    q = D.Normal(mu, torch.exp(0.5 * logvar))
    p = D.Normal(torch.zeros(3), torch.ones(3))
    torch.testing.assert_close(gaussian_kl(mu, logvar), D.kl_divergence(q, p).sum(-1))


def test_has_nan_finds_one_missing_cell_and_its_false_alarm_changes_nothing(monkeypatch):
    x = torch.rand(128, 784)
    assert not has_nan(x) and not has_nan(x.masked_fill(x > 0.5, torch.inf))
    x[77, 300] = torch.nan
    assert has_nan(x) and has_nan(x.double())
    # +inf meeting -inf sums to NaN too: the masked path must then give the same terms
    model = VAE(VAEConfig(input_dim=6, hidden_dims=(8,), latent_dim=2, likelihood="gaussian")).eval()
    rows = torch.cat([torch.randn(4, 6), torch.tensor([[torch.inf, -torch.inf, 0, 0, 0, 0]])])
    assert has_nan(rows)
    masked = model(rows)
    monkeypatch.setattr("vaeguard.model.has_nan", lambda x: False)
    plain = model(rows)
    for a, b in zip((plain.feature_nll, plain.kl, plain.mu), (masked.feature_nll, masked.kl, masked.mu)):
        assert torch.equal(a[:4], b[:4]) and torch.allclose(a[4], b[4], equal_nan=True)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 27, 31), (1, 8, 8)])
def test_conv_vae_round_trips_any_image_shape(shape):
    cfg = VAEConfig(input_dim=int(np.prod(shape)), architecture="conv", input_shape=shape, latent_dim=4)
    model = VAE(cfg)
    x = torch.rand(2, cfg.input_dim)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (2, 4)
    assert model.decode(mu).shape == (2, cfg.input_dim)


def test_conv_config_rejects_mismatched_shape():
    with pytest.raises(ValueError, match="input_shape"):
        VAEConfig(input_dim=100, architecture="conv", input_shape=(1, 8, 8))


def _train(X, likelihood="bernoulli", epochs=5, beta=1.0, **kw):
    torch.manual_seed(0)  # the initial weights, whatever the tests before drew
    model = VAE(VAEConfig(input_dim=X.shape[1], latent_dim=3, hidden_dims=(32,), likelihood=likelihood))
    cfg = TrainConfig(epochs=epochs, batch_size=32, beta=beta, **kw)
    history = train_vae(model, X[:-40], X[-40:], cfg, seed=0, device=torch.device("cpu"))
    return model, history


def test_loss_is_reconstruction_plus_beta_kl_and_kl_is_nonzero():
    X = np.random.default_rng(0).random((200, 10)).astype(np.float32)
    _, history = _train(X, beta=0.5)
    kl = np.array(history["train_kl"])
    assert (kl > 1e-3).all()
    np.testing.assert_allclose(history["train_loss"], np.array(history["train_recon"]) + 0.5 * kl)
    np.testing.assert_allclose(history["val_loss"], np.array(history["val_recon"]) + 0.5 * np.array(history["val_kl"]))


def test_kl_warmup_ramps_beta():
    from vaeguard.training import kl_weight

    cfg = TrainConfig(beta=2.0, kl_warmup_epochs=3)
    assert [kl_weight(e, cfg) for e in range(5)] == [0.5, 1.0, 1.5, 2.0, 2.0]


def test_non_finite_loss_stops_training_with_advice():
    X = np.full((100, 4), 1e30, dtype=np.float32)
    X[::2] = -1e30
    with pytest.raises(TrainingError, match="learning_rate"):
        _train(X, likelihood="gaussian")


def test_early_stopping_restores_best_validation_epoch():
    from vaeguard.training import evaluate_loss

    X = np.random.default_rng(1).random((300, 8)).astype(np.float32)
    model, history = _train(X, epochs=30, patience=3, learning_rate=5e-2)
    recon, kl = evaluate_loss(model, torch.as_tensor(X[-40:]), batch_size=1024)
    assert recon + kl == pytest.approx(min(history["val_loss"]), rel=1e-6)
    assert history["val_loss"][-1] > min(history["val_loss"])


def test_scores_are_deterministic_bit_identical_whatever_the_batch_and_consistent():
    X = np.random.default_rng(2).random((600, 10)).astype(np.float32)  # more than two blocks
    model, _ = _train(X[:120])
    for score_type, kw in [("elbo", {}), ("recon", {}), ("kl", {}), ("iwae", {"n_samples": 32})]:
        full = anomaly_scores(model, X, score_type, **kw)
        np.testing.assert_array_equal(full, anomaly_scores(model, X, score_type, **kw))
        for start, stop in [(0, 1), (5, 12), (250, 270), (299, 600), (1, 599)]:
            np.testing.assert_array_equal(anomaly_scores(model, X[start:stop], score_type, **kw), full[start:stop])
    elbo, recon, kl = (anomaly_scores(model, X, t) for t in ("elbo", "recon", "kl"))
    np.testing.assert_allclose(elbo, recon + kl, rtol=1e-5)
    np.testing.assert_allclose(feature_scores(model, X).sum(1), recon, rtol=1e-5)
    np.testing.assert_array_equal(feature_scores(model, X[3:4]), feature_scores(model, X)[3:4])


def test_importance_weighting_tightens_the_bound():
    X = np.random.default_rng(3).random((150, 10)).astype(np.float32)
    model, _ = _train(X, epochs=10)
    one = anomaly_scores(model, X, "iwae", n_samples=1).mean()
    many = anomaly_scores(model, X, "iwae", n_samples=256).mean()
    assert many < one


@pytest.mark.parametrize(
    "cfg",
    [
        VAEConfig(input_dim=6, hidden_dims=(8, 4), latent_dim=2, likelihood="gaussian"),
        VAEConfig(input_dim=6, hidden_dims=(), latent_dim=3),
        VAEConfig(input_dim=63, architecture="conv", input_shape=(1, 7, 9), conv_channels=(2, 3), hidden_dims=(5,)),
        VAEConfig(input_dim=150, architecture="conv", input_shape=(3, 10, 5), conv_channels=(4,), hidden_dims=()),
    ],
)
def test_model_footprint_counts_what_a_forward_pass_outputs(cfg):
    """The size limits count activations by shape arithmetic; a real forward pass must agree."""
    from vaeguard.footprint import model_footprint

    model, counted = VAE(cfg), []
    for layer in model.modules():
        if not list(layer.children()):
            layer.register_forward_hook(lambda m, i, o: counted.append(o.numel()))
    with torch.no_grad():
        model.decode(model.encode(torch.rand(1, cfg.input_dim))[0])
    n_params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    assert model_footprint(cfg) == (n_params, sum(counted) + 3 * cfg.input_dim)


def test_training_takes_adams_fused_kernel_and_the_plain_loop_where_torch_has_none(monkeypatch):
    import vaeguard.training as training

    model = VAE(VAEConfig(input_dim=4, latent_dim=2, hidden_dims=(8,)))
    if tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 4):  # CPU fused kernel since 2.4
        assert training.adam(model, TrainConfig()).defaults["fused"]
    plain = torch.optim.Adam

    class NoFusedKernel(plain):  # what torch < 2.4 does on the CPU
        def __init__(self, params, **kwargs):
            if kwargs.get("fused"):
                raise RuntimeError("`fused=True` requires all the params to be CUDA tensors")
            super().__init__(params, **kwargs)

    monkeypatch.setattr(training.torch.optim, "Adam", NoFusedKernel)
    optimizer = training.adam(model, TrainConfig(learning_rate=0.01))
    assert not optimizer.defaults.get("fused") and optimizer.defaults["lr"] == 0.01
    assert len(optimizer.param_groups[0]["params"]) == len(list(model.parameters()))
    X = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    history = train_vae(model, X, None, TrainConfig(epochs=2), seed=0, device=torch.device("cpu"))
    assert len(history["train_loss"]) == 2 and np.isfinite(history["train_loss"]).all()


def test_clip_gradients_scales_as_clip_grad_norm_and_leaves_gradients_under_the_limit():
    """training.clip_gradients gives the gradients torch's clip_grad_norm_ gives, bit for bit:
    above the limit (scaled), under it (untouched: torch's x * 1.0), near a tiny limit (the
    1e-6 in the factor counts) and with a NaN gradient (every gradient scaled by NaN, as in torch)."""
    from vaeguard.training import clip_gradients

    rng = np.random.default_rng(0)
    cases = {"above": (10.0, 1.0), "under": (1e-3, 1.0), "tiny limit": (4e-8, 1e-6), "NaN": (1.0, 1.0)}
    for case, (scale, max_norm) in cases.items():  # the three gradients' total norm is about 27 * scale
        grads = [scale * torch.as_tensor(rng.normal(size=shape), dtype=torch.float32) for shape in ((30, 20), (20,), (5, 30))]
        if case == "NaN":
            grads[1][3] = float("nan")
        ours, theirs = ([torch.zeros_like(g, requires_grad=True) for g in grads] for _ in range(2))
        for params in (ours, theirs):
            for p, g in zip(params, grads):
                p.grad = g.clone()
        clip_gradients(ours, max_norm)
        torch.nn.utils.clip_grad_norm_(theirs, max_norm)
        for a, b in zip(ours, theirs):
            assert torch.equal(a.grad, b.grad) or (case == "NaN" and a.grad.isnan().all() and b.grad.isnan().all()), case
        untouched = all(torch.equal(p.grad, g) for p, g in zip(ours, grads))
        assert untouched == (case == "under"), case
