"""Per-sample and per-feature anomaly scores from a trained VAE, batched and deterministic.

Every score here is an *anomaly score*: higher means the model finds the sample less likely.
The same input gives bit-identical scores on every call and whatever the batch it sits in:
the posterior mean stands in for z, the importance-weighted estimate draws its K noise
vectors once from a fixed seed and shares them across samples, and the network always runs
on blocks of the same number of rows (`block_rows`, fixed per architecture; the last block
padded with zero rows). Matrix-product kernels pick their blocking from the matrix shapes,
so a row scored in a batch of 7 and in a batch of 1000 would otherwise round differently
(about 1e-6 relative).

A score can be NaN or infinite (values far outside the training range overflow float32);
callers treat such a score as anomalous, never as normal (calibration.is_flagged).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from torch import nn

from .complexity import ImageCodeLength, LocalContextModel
from .footprint import check_model_size, model_footprint
from .latent import LatentNeighbours
from .limits import check_importance_samples
from .model import VAE, ELBOTerms
from .pixelrange import PixelRange

SCORE_TYPES = ("elbo", "recon", "iwae", "kl", "ratio", "fused")
SCORE_DESCRIPTIONS = {
    "elbo": "negative ELBO at the posterior mean: reconstruction NLL + KL",
    "ratio": "negative ELBO minus -log p(x) under a local pixel-context model (images only): "
    "a log-likelihood ratio that discounts how simple the image is",
    "recon": "reconstruction negative log-likelihood at the posterior mean",
    "fused": "mean of the robust z-scores of the reconstruction NLL (for grey-level images of 16 pixels a "
    "side or more, less the image's code length under a generic coder) and of the distance from the latent "
    "code to its 5th nearest training code (latent density beside reconstruction)",
    "iwae": "importance-weighted estimate of -log p(x) with K posterior samples",
    "kl": "KL(q(z|x) || p(z)): how far the code sits from the prior",
}


BLOCK_ROWS = None  # None: block_rows(cfg); an int forces that block size (benchmarks)
# Rows x importance samples decoded at once by the iwae score (rows = IWAE_BLOCK // K).
IWAE_BLOCK = 4096


def iwae_rows(n_samples: int) -> int:
    """Rows per block of the iwae score with K = n_samples importance samples."""
    return max(1, IWAE_BLOCK // n_samples)


def block_rows(cfg, extra_values: int = 0) -> int:
    """Rows per scoring block for this architecture: a power of two from 64 to 1024.

    About 2**24 parameter-rows of work per block: big models get small blocks (a single row
    then costs a 64-row block, not a 1024-row one), tiny models big blocks (fewer calls).
    It depends on the architecture and the size of its score state (`extra_values`, counted
    as parameters: where the score state lived in the network, and where the block sizes of
    existing model files came from) only, so a model always scores with the same block shape.
    """
    if BLOCK_ROWS is not None:
        return BLOCK_ROWS
    n_params, per_row = model_footprint(cfg)
    n_params += extra_values
    rows = 2 ** round(math.log2(max(1.0, 2**24 / (n_params + per_row))))
    return int(min(1024, max(64, rows)))


def scoring_rows(cfg, score_type: str, n_samples: int = 64, state: "ScoreState | None" = None) -> int:
    """Rows per scoring block for this model and score state (`block_rows`); DataError when
    scoring one block would go over the memory budget. A `Scorer` asks once and keeps it."""
    extra = state.n_values() if state is not None else 0
    rows = block_rows(cfg, extra)
    if score_type == "iwae":
        check_importance_samples(n_samples)
        check_model_size(cfg, rows=iwae_rows(n_samples), samples=n_samples, extra_values=extra)
    else:
        check_model_size(cfg, rows=rows, extra_values=extra)
    return rows


class ScoreState(nn.Module):
    """What a score reads beside the network, fitted on the training data but not by gradient:
    the local pixel-context model of the "ratio" score (vaeguard.complexity), the reference
    codes and part scales of the "fused" score (vaeguard.latent) and, for grey-level images,
    the image code length that "fused" subtracts from the reconstruction NLL
    (vaeguard.complexity.ImageCodeLength), and, for every image model, the training range of each
    pixel, whose cost every likelihood score adds to the reconstruction NLL
    (vaeguard.pixelrange.PixelRange). Each may be absent.

    Its buffers travel in the model file beside the network's (`tensors`, `from_file`); `config`
    is what rebuilds it empty: `{"context_model": bool, "latent_neighbours": int}`, plus
    `"code_length": true` when it holds the code length and `"pixel_range": true` when it holds
    the pixel range (files written before either have no such field).
    """

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int] | None = None,
        n_reference: int = 0,
        latent_dim: int = 0,
        code_length_shape: tuple[int, int, int] | None = None,
        range_features: int = 0,
    ):
        super().__init__()
        self.context = LocalContextModel(image_shape) if image_shape is not None else None
        self.neighbours = LatentNeighbours(n_reference, latent_dim) if n_reference else None
        self.code_length = ImageCodeLength(code_length_shape) if code_length_shape is not None else None
        self.pixel_range = PixelRange(range_features) if range_features else None

    @classmethod
    def from_config(cls, config: dict, *, likelihood: str, image_shape, latent_dim: int) -> "ScoreState":
        """An empty state of the shape `config` describes; ValueError when the model cannot hold it."""
        if config.get("context_model"):
            if image_shape is None or len(image_shape) != 3:
                raise ValueError("the context model needs input_shape=(channels, height, width)")
            if likelihood != "bernoulli":
                raise ValueError("the context model needs the bernoulli likelihood (pixels in [0, 1])")
        n_reference = int(config.get("latent_neighbours", 0))
        if n_reference < 0:
            raise ValueError(f"latent_neighbours must be >= 0, got {n_reference}")
        code_length = bool(config.get("code_length", False))  # files before it have no such field
        if code_length:
            if image_shape is None or len(image_shape) != 3:
                raise ValueError("the image code length needs input_shape=(channels, height, width)")
            if not n_reference:
                raise ValueError("the image code length corrects the fused score: it needs latent neighbours")
        pixel_range = bool(config.get("pixel_range", False))
        if pixel_range and (image_shape is None or len(image_shape) != 3):
            raise ValueError("the pixel range needs input_shape=(channels, height, width)")
        return cls(
            image_shape=image_shape if config.get("context_model") else None,
            n_reference=n_reference,
            latent_dim=latent_dim,
            code_length_shape=image_shape if code_length else None,
            range_features=math.prod(image_shape) if pixel_range else 0,
        )

    def n_values(self) -> int:
        """How many numbers it holds (counted with the network's parameters in memory estimates)."""
        return sum(b.numel() for b in self.buffers())

    def config(self) -> dict:
        config = {
            "context_model": self.context is not None,
            "latent_neighbours": len(self.neighbours.codes) if self.neighbours is not None else 0,
        }
        if self.code_length is not None:  # absent when false, as in files written before it
            config["code_length"] = True
        if self.pixel_range is not None:  # likewise
            config["pixel_range"] = True
        return config

    def terms(self, model: VAE, x: torch.Tensor) -> ELBOTerms:
        """The model's ELBO terms for a block x, with the pixel range's cost in the
        reconstruction NLL when the state holds one: what every score reads."""
        terms = model(x)
        if self.pixel_range is None:
            return terms
        return ELBOTerms(terms.feature_nll + self.pixel_range.feature_nll(x), terms.kl, terms.mu)

    def tensors(self) -> dict[str, np.ndarray]:
        """Its buffers by name ("context.logits", "neighbours.codes", ...), float32 on the CPU."""
        return {k: v.detach().cpu().numpy() for k, v in self.state_dict().items()}


def _blocks(model: VAE, X: np.ndarray, rows: int):
    """(block, n): X in blocks of exactly `rows` rows, the last padded with zero rows; n are real."""
    device = next(model.parameters()).device
    for start in range(0, len(X), rows):
        part = torch.as_tensor(X[start : start + rows], dtype=torch.float32)
        if len(part) < rows:  # only the last block is padded; full blocks are not copied
            block = torch.zeros((rows, *part.shape[1:]), dtype=torch.float32)
            block[: len(part)] = part
            part = block
        yield part.to(device), min(rows, len(X) - start)


def _run(model: VAE, X: np.ndarray, fn, rows: int | None = None) -> torch.Tensor | None:
    """fn over fixed-size blocks of X, padding rows dropped, concatenated (None for no rows)."""
    parts = [fn(block)[:n] for block, n in _blocks(model, X, block_rows(model.cfg) if rows is None else rows)]
    return torch.cat(parts) if parts else None


def _terms(model: VAE, x: torch.Tensor, state: ScoreState | None) -> ELBOTerms:
    return model(x) if state is None else state.terms(model, x)


@torch.inference_mode()
def _iwae_nll(model: VAE, x: torch.Tensor, eps: torch.Tensor, state: ScoreState | None = None) -> torch.Tensor:
    """-log p(x) by importance sampling, plus the pixel range's cost when `state` holds one."""
    mu, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    z = mu[:, None, :] + std[:, None, :] * eps[None]  # (n, K, latent)
    log_2pi = math.log(2 * math.pi)
    log_q = -0.5 * (log_2pi + logvar[:, None, :] + eps[None] ** 2).sum(-1)
    log_prior = -0.5 * (log_2pi + z**2).sum(-1)
    params = model.decode(z)
    log_lik = -model.feature_nll(x[:, None, :].expand_as(params), params).sum(-1)
    log_w = log_lik + log_prior - log_q
    nll = -(torch.logsumexp(log_w, dim=1) - math.log(eps.shape[0]))
    return nll if state is None or state.pixel_range is None else nll + state.pixel_range.nll(x)


@torch.no_grad()
def fit_level_offsets(model: VAE, batches: Iterable[np.ndarray]) -> None:
    """Set the model's level offsets (`VAEConfig.relative_levels`; nothing to do without them):
    for each level of each categorical column, the mean of the column's term over the rows of
    `batches` (training rows, as the network reads them) that hold the level; 0 for a level
    no row holds. Deterministic: the rows run in the model's fixed scoring blocks."""
    if not model.cfg.relative_levels:
        return
    model.eval()
    model.level_offsets.zero_()  # the terms below are then the plain ones
    sums = torch.zeros(model.cfg.input_dim, dtype=torch.float64)
    counts = torch.zeros(model.cfg.input_dim, dtype=torch.float64)
    for X in batches:
        for x, n in _blocks(model, np.asarray(X), block_rows(model.cfg)):
            x = x[:n]
            logits = model.decode(model.encode(x)[0])
            x = torch.nan_to_num(x)  # a missing cell holds no level
            for s, w in model.cfg.groups:
                levels = x[:, s : s + w]
                term = model.level_term(levels, logits[:, s : s + w], s)
                sums[s : s + w] += (levels * term[:, None]).sum(dim=0).double().cpu()
                counts[s : s + w] += levels.sum(dim=0).double().cpu()
    offsets = torch.where(counts > 0, sums / counts.clamp(min=1), 0.0)
    model.level_offsets.copy_(offsets.to(model.level_offsets))


@torch.no_grad()
def fit_latent_neighbours(
    model: VAE, state: ScoreState, X_reference: np.ndarray, X_scale: np.ndarray, code_lengths: np.ndarray | None = None
) -> None:
    """Store the codes of X_reference in `state` and scale the fused score's parts on X_scale.

    X_scale should be held-out normal rows (not the calibration rows, whose scores set the
    threshold); `state` must have been built with n_reference=len(X_reference). With an image
    code length in `state`, `code_lengths` are those of the X_scale rows (`state.code_length.nats`
    of the raw rows, whose grey-level step it must already hold).
    """
    if state.neighbours is None:
        raise ValueError("the score state holds no latent neighbours (ScoreState(n_reference=N, ...))")
    model.eval()
    state.neighbours.fit(torch.as_tensor(encode_means(model, X_reference, block_rows(model.cfg, state.n_values()))))
    both = torch.as_tensor(fused_parts(model, X_scale, state, code_lengths))
    state.neighbours.set_scales(both[:, 0], both[:, 1])


def _fused_columns(terms: ELBOTerms) -> torch.Tensor:
    """What the fused score reads of a block, (n, 1 + latent_dim): the reconstruction NLL and
    the code. The codes' distances are found after the blocks, over all the rows at once
    (`_fused_parts`): a ranking of many rows costs less per row than one of a block."""
    return torch.cat([terms.recon[:, None], terms.mu], dim=1)


def _fused_parts(state: ScoreState, columns: torch.Tensor) -> torch.Tensor:
    """The fused score's two parts, (n, 2), from `_fused_columns` of the rows: reconstruction
    NLL and latent distance."""
    return torch.stack([columns[:, 0], state.neighbours.distance(columns[:, 1:])], dim=1)


def _corrected(recon: torch.Tensor, state: ScoreState, code_lengths: np.ndarray | None) -> torch.Tensor:
    """The fused score's first part, float64: the reconstruction NLL, less the image code length
    when the state holds one (ValueError when it does and `code_lengths` is None)."""
    recon = recon.double()
    if state.code_length is None:
        return recon
    if code_lengths is None or len(code_lengths) != len(recon):
        raise ValueError("this model's fused score subtracts each image's code length: pass code_lengths, one per row")
    return recon - torch.as_tensor(np.asarray(code_lengths, dtype=np.float64), device=recon.device)


@torch.inference_mode()
def fused_parts(model: VAE, X: np.ndarray, state: ScoreState, code_lengths: np.ndarray | None = None) -> np.ndarray:
    """The two parts of the fused score before scaling, float64 (n, 2): the reconstruction NLL
    (less the image code length `code_lengths`, for a state that holds one) and the distance
    from the latent code to its k-th nearest reference code.

    Shows which part carries the signal on a data set (benchmarks/score_types.py).
    """
    check_score_type("fused", state)
    model.eval()

    columns = _run(model, X, lambda x: _fused_columns(state.terms(model, x)), block_rows(model.cfg, state.n_values()))
    if columns is None:
        return np.empty((0, 2))
    both = _fused_parts(state, columns).double()
    both[:, 0] = _corrected(both[:, 0], state, code_lengths)
    return both.cpu().numpy()


def check_score_type(score_type: str, state: ScoreState | None = None) -> None:
    """ValueError unless `score_type` is known and `state` holds what it reads."""
    if score_type not in SCORE_TYPES:
        raise ValueError(f"score_type must be one of {', '.join(SCORE_TYPES)}; got {score_type!r}")
    if score_type == "ratio" and (state is None or state.context is None):
        raise ValueError(
            "score_type='ratio' needs a score state with a context model (ScoreState(image_shape=...)): "
            "images with a known input_shape and the bernoulli likelihood"
        )
    if score_type == "fused" and (state is None or state.neighbours is None):
        raise ValueError(
            "score_type='fused' needs a score state with latent neighbours (ScoreState(n_reference=N, ...)) "
            "fitted by fit_latent_neighbours"
        )


@torch.inference_mode()
def score_and_explain(
    model: VAE,
    X: np.ndarray,
    score_type: str = "elbo",
    n_samples: int = 64,
    seed: int = 0,
    *,
    explain: bool = True,
    state: ScoreState | None = None,
    rows: int | None = None,
    code_lengths: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Anomaly score per row of X (float64, (n,)) and, with `explain`, the per-feature
    reconstruction NLL at the posterior mean (float64, (n, d)) from the same forward pass.

    Feature rows sum to the 'recon' score, and to the 'elbo' score minus its KL part.
    `state` holds what "ratio" and "fused" read; `rows` is `scoring_rows` of the model, which
    a caller scoring many chunks asks once (without it, it is asked here). `code_lengths`: each
    row's image code length, for a "fused" state that holds one (`Scorer` computes them from
    the raw rows).
    """
    check_score_type(score_type, state)
    rows = scoring_rows(model.cfg, score_type, n_samples, state) if rows is None else rows
    model.eval()
    n, d = X.shape
    if score_type == "iwae":
        device = next(model.parameters()).device
        generator = torch.Generator().manual_seed(seed)
        eps = torch.randn(n_samples, model.cfg.latent_dim, generator=generator).to(device)
        scores = _run(model, X, lambda x: _iwae_nll(model, x, eps, state), rows=iwae_rows(n_samples))
        features = _run(model, X, lambda x: _terms(model, x, state).feature_nll, rows) if explain else None
    else:

        def score_and_features(x: torch.Tensor) -> torch.Tensor:
            terms = _terms(model, x, state)
            if score_type == "ratio":
                score = (terms.recon + terms.kl - state.context.nll(x))[:, None]
            elif score_type == "fused":  # what it reads; fused below, with the code lengths of the whole X
                score = _fused_columns(terms)
            else:
                score = {"elbo": terms.recon + terms.kl, "recon": terms.recon, "kl": terms.kl}[score_type][:, None]
            return torch.cat([score, terms.feature_nll], dim=1) if explain else score

        both = _run(model, X, score_and_features, rows)
        width = 1 + model.cfg.latent_dim if score_type == "fused" else 1
        scores = None if both is None else both[:, 0]
        if both is not None and score_type == "fused":
            parts = _fused_parts(state, both[:, :width])
            scores = state.neighbours.fuse(_corrected(parts[:, 0], state, code_lengths), parts[:, 1])
        features = None if both is None or not explain else both[:, width:]
    score_array = scores.double().cpu().numpy() if scores is not None else np.empty(0, dtype=np.float64)
    if not explain:
        return score_array, None
    return score_array, features.double().cpu().numpy() if features is not None else np.empty((0, d))


def anomaly_scores(
    model: VAE,
    X: np.ndarray,
    score_type: str = "elbo",
    n_samples: int = 64,
    seed: int = 0,
    *,
    state: ScoreState | None = None,
    code_lengths: np.ndarray | None = None,
) -> np.ndarray:
    """Anomaly score per row of X (float64, shape (n,)); see SCORE_DESCRIPTIONS."""
    return score_and_explain(model, X, score_type, n_samples, seed, explain=False, state=state, code_lengths=code_lengths)[0]


def feature_scores(model: VAE, X: np.ndarray) -> np.ndarray:
    """Per-feature reconstruction NLL at the posterior mean, shape (n, d).

    Rows sum to the 'recon' score, and to the 'elbo' score minus its KL part.
    """
    return score_and_explain(model, X, "recon")[1]


@torch.inference_mode()
def encode_means(model: VAE, X: np.ndarray, rows: int | None = None) -> np.ndarray:
    """Posterior means, shape (n, latent_dim): the map of where each sample sits.
    `rows`: the block size (default `block_rows(model.cfg)`; a Scorer passes its own)."""
    model.eval()
    out = _run(model, X, lambda x: model.encode(x)[0], rows)
    return out.cpu().numpy() if out is not None else np.empty((0, model.cfg.latent_dim), dtype=np.float32)


@torch.inference_mode()
def reconstruct(model: VAE, X: np.ndarray, rows: int | None = None) -> np.ndarray:
    """E[x | z = posterior mean], in the model's input space, shape (n, d); `rows` as in encode_means."""
    model.eval()
    out = _run(model, X, lambda x: model.mean_output(model.decode(model.encode(x)[0])), rows)
    return out.cpu().numpy() if out is not None else np.empty((0, X.shape[1]), dtype=np.float32)
