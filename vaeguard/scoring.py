"""Per-sample and per-feature anomaly scores from a trained VAE, batched and deterministic.

Every score here is an *anomaly score*: higher means the model finds the sample less likely.
The same input gives the same score on every call and whatever the batch it sits in: the
posterior mean stands in for z, and the importance-weighted estimate draws its K noise
vectors once from a fixed seed and shares them across samples.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .model import VAE

SCORE_TYPES = ("elbo", "recon", "iwae", "kl", "ratio")
SCORE_DESCRIPTIONS = {
    "elbo": "negative ELBO at the posterior mean: reconstruction NLL + KL",
    "ratio": "negative ELBO minus -log p(x) under a local pixel-context model (images only): "
    "a log-likelihood ratio that discounts how simple the image is",
    "recon": "reconstruction negative log-likelihood at the posterior mean",
    "iwae": "importance-weighted estimate of -log p(x) with K posterior samples",
    "kl": "KL(q(z|x) || p(z)): how far the code sits from the prior",
}


def _batches(model: VAE, X: np.ndarray, batch_size: int):
    device = next(model.parameters()).device
    for start in range(0, len(X), batch_size):
        yield torch.as_tensor(X[start : start + batch_size], dtype=torch.float32, device=device)


@torch.no_grad()
def _iwae_nll(model: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    mu, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    z = mu[:, None, :] + std[:, None, :] * eps[None]  # (n, K, latent)
    log_2pi = math.log(2 * math.pi)
    log_q = -0.5 * (log_2pi + logvar[:, None, :] + eps[None] ** 2).sum(-1)
    log_prior = -0.5 * (log_2pi + z**2).sum(-1)
    params = model.decode(z)
    log_lik = -model.feature_nll(x[:, None, :].expand_as(params), params).sum(-1)
    log_w = log_lik + log_prior - log_q
    return -(torch.logsumexp(log_w, dim=1) - math.log(eps.shape[0]))


def check_score_type(model: VAE, score_type: str) -> None:
    """ValueError unless `model` can compute `score_type`."""
    if score_type not in SCORE_TYPES:
        raise ValueError(f"score_type must be one of {', '.join(SCORE_TYPES)}; got {score_type!r}")
    if score_type == "ratio" and model.context is None:
        raise ValueError(
            "score_type='ratio' needs a model with a context model (VAEConfig(context_model=True)): "
            "images with a known input_shape and the bernoulli likelihood"
        )


@torch.no_grad()
def score_and_explain(
    model: VAE,
    X: np.ndarray,
    score_type: str = "elbo",
    batch_size: int = 1024,
    n_samples: int = 64,
    seed: int = 0,
    *,
    explain: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Anomaly score per row of X (float64, (n,)) and, with `explain`, the per-feature
    reconstruction NLL at the posterior mean (float64, (n, d)) from the same forward pass.

    Feature rows sum to the 'recon' score, and to the 'elbo' score minus its KL part.
    """
    check_score_type(model, score_type)
    model.eval()
    scores, features = [], []
    if score_type == "iwae":
        device = next(model.parameters()).device
        generator = torch.Generator().manual_seed(seed)
        eps = torch.randn(n_samples, model.cfg.latent_dim, generator=generator).to(device)
        rows = max(1, min(batch_size, 65536 // n_samples))
        scores = [_iwae_nll(model, x, eps) for x in _batches(model, X, rows)]
        if explain:
            features = [model(x).feature_nll for x in _batches(model, X, batch_size)]
    else:
        for x in _batches(model, X, batch_size):
            terms = model(x)
            recon = terms.recon
            if score_type == "ratio":
                scores.append(recon + terms.kl - model.context.nll(x))
            else:
                scores.append({"elbo": recon + terms.kl, "recon": recon, "kl": terms.kl}[score_type])
            if explain:
                features.append(terms.feature_nll)
    n, d = X.shape
    score_array = torch.cat(scores).double().cpu().numpy() if scores else np.empty(0, dtype=np.float64)
    if not explain:
        return score_array, None
    return score_array, torch.cat(features).double().cpu().numpy() if features else np.empty((0, d))


def anomaly_scores(
    model: VAE,
    X: np.ndarray,
    score_type: str = "elbo",
    batch_size: int = 1024,
    n_samples: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """Anomaly score per row of X (float64, shape (n,)); see SCORE_DESCRIPTIONS."""
    return score_and_explain(model, X, score_type, batch_size, n_samples, seed, explain=False)[0]


def feature_scores(model: VAE, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Per-feature reconstruction NLL at the posterior mean, shape (n, d).

    Rows sum to the 'recon' score, and to the 'elbo' score minus its KL part.
    """
    return score_and_explain(model, X, "recon", batch_size)[1]


@torch.no_grad()
def encode_means(model: VAE, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Posterior means, shape (n, latent_dim): the map of where each sample sits."""
    model.eval()
    return torch.cat([model.encode(x)[0] for x in _batches(model, X, batch_size)]).cpu().numpy()


@torch.no_grad()
def reconstruct(model: VAE, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """E[x | z = posterior mean], in the model's input space, shape (n, d)."""
    model.eval()
    parts = [model.mean_output(model.decode(model.encode(x)[0])) for x in _batches(model, X, batch_size)]
    return torch.cat(parts).cpu().numpy()
