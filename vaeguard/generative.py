"""The generative side of a trained VAE: decode codes, sample the prior, interpolate, traverse.

Pure functions on a `VAE` and arrays in the model's input space (standardised features, or
pixels in [0, 1]); the estimator maps them back to the units of X. Randomness comes only from
an explicit seed, so the same call gives the same rows, like the scores.

Interpolation between two codes is "slerp" (spherical) or "linear". Under the N(0, I) prior
almost all the mass of a d-dimensional code lies near the sphere of radius sqrt(d); the
straight line between two such codes cuts inside it (its midpoint between two orthogonal
codes has norm sqrt(d / 2)), into a region the decoder rarely saw. Slerp follows the great
circle between the two directions and interpolates the norms linearly, so every interpolant
keeps a typical norm (White, "Sampling generative networks", 2016).
"""

from __future__ import annotations

import numpy as np
import torch

from .model import VAE

INTERPOLATIONS = ("slerp", "linear")


def _device(model: VAE) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def decode(model: VAE, Z: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """E[x | z] for each code (row of Z), in the model's input space, shape (n, input_dim)."""
    model.eval()
    Z = np.asarray(Z, dtype=np.float32)
    parts = [
        model.mean_output(model.decode(torch.as_tensor(Z[i : i + batch_size], device=_device(model))))
        for i in range(0, len(Z), batch_size)
    ]
    return torch.cat(parts).cpu().numpy() if parts else np.empty((0, model.cfg.input_dim), np.float32)


def prior_codes(model: VAE, n: int, seed: int) -> np.ndarray:
    """n codes drawn from the prior N(0, I) with a torch.Generator seeded by `seed`."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(n, model.cfg.latent_dim, generator=generator).numpy()


@torch.no_grad()
def draw_from_likelihood(model: VAE, means: np.ndarray, seed: int) -> np.ndarray:
    """One draw of x from p(x | z) given the decoder means: Bernoulli pixels (0 or 1), or
    Gaussian values with the learned per-feature variance; a categorical column, one level
    drawn from its probabilities (one-hot)."""
    generator = torch.Generator().manual_seed(int(seed))
    means_t = torch.as_tensor(np.asarray(means, dtype=np.float32))
    if model.cfg.likelihood == "bernoulli":
        drawn = torch.bernoulli(means_t.clamp(0.0, 1.0), generator=generator)
    else:
        logvar = model.likelihood_logvar().detach().cpu()
        drawn = means_t + torch.exp(0.5 * logvar) * torch.randn(means_t.shape, generator=generator)
    for s, w in model.cfg.groups:
        if len(drawn):
            level = torch.multinomial(means_t[:, s : s + w].clamp(min=0.0), 1, generator=generator)
            drawn[:, s : s + w] = torch.nn.functional.one_hot(level[:, 0], w).to(drawn.dtype)
    return drawn.numpy()


def sample(model: VAE, n: int, seed: int, mean: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """n new samples from the model: codes from the prior, then the decoder mean (mean=True)
    or one draw from the likelihood (mean=False). Returns (codes, samples) in input space."""
    codes = prior_codes(model, n, seed)
    means = decode(model, codes)
    # A second, derived seed: the likelihood draw must not reuse the prior's noise.
    return codes, means if mean else draw_from_likelihood(model, means, seed + 1)


def interpolate_codes(z_a: np.ndarray, z_b: np.ndarray, steps: int, method: str = "slerp") -> np.ndarray:
    """`steps` codes from z_a to z_b inclusive, shape (steps, d); see the module docstring.

    Slerp moves along the great circle between the directions of z_a and z_b while the norm
    goes linearly from |z_a| to |z_b|; it falls back to linear when either code is zero or
    the two are (anti)parallel, where the circle is not defined.
    """
    if method not in INTERPOLATIONS:
        raise ValueError(f"method must be one of {INTERPOLATIONS}, got {method!r}")
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (the two endpoints), got {steps}")
    z_a, z_b = np.asarray(z_a, dtype=np.float64), np.asarray(z_b, dtype=np.float64)
    t = np.linspace(0.0, 1.0, steps)[:, None]
    linear = (1 - t) * z_a + t * z_b
    norm_a, norm_b = np.linalg.norm(z_a), np.linalg.norm(z_b)
    if method == "linear" or norm_a < 1e-12 or norm_b < 1e-12:
        return linear
    u_a, u_b = z_a / norm_a, z_b / norm_b
    omega = np.arccos(np.clip(u_a @ u_b, -1.0, 1.0))
    if np.sin(omega) < 1e-6:
        return linear
    direction = (np.sin((1 - t) * omega) * u_a + np.sin(t * omega) * u_b) / np.sin(omega)
    out = direction * ((1 - t) * norm_a + t * norm_b)
    out[0], out[-1] = z_a, z_b  # exact endpoints, free of rounding
    return out


def traverse_codes(z: np.ndarray, dim: int, values) -> np.ndarray:
    """Copies of code z with coordinate `dim` set to each of `values`, shape (len(values), d)."""
    z = np.asarray(z, dtype=np.float64).ravel()
    values = np.asarray(values, dtype=np.float64).ravel()
    out = np.repeat(z[None], len(values), axis=0)
    out[:, dim] = values
    return out


@torch.no_grad()
def active_dims(model: VAE, Xs: np.ndarray, k: int, batch_size: int = 1024) -> np.ndarray:
    """The k latent dimensions with the largest mean KL to the prior on Xs, most active first:
    the ones worth traversing (inactive units decode to the same image whatever their value)."""
    model.eval()
    total = torch.zeros(model.cfg.latent_dim, dtype=torch.float64)
    for i in range(0, len(Xs), batch_size):
        x = torch.as_tensor(np.asarray(Xs[i : i + batch_size], dtype=np.float32), device=_device(model))
        mu, logvar = model.encode(x)
        total += (0.5 * (mu**2 + torch.exp(logvar) - 1.0 - logvar)).sum(0).double().cpu()
    return np.argsort(-total.numpy(), kind="stable")[:k]
