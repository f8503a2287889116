"""Latent density beside reconstruction: how far a sample's code lies from the training codes.

The reconstruction term measures how well the decoder explains a sample; it says little
about *where* the encoder puts it. A sample of an unseen kind can be reconstructed well enough
(a plain coat among T-shirts) and still land in an empty region of the latent space. The
distance from its posterior mean to the k-th nearest posterior mean of the training data is
a non-parametric estimate of the latent density there (the kNN detector of Ramaswamy et al.
2000, applied to the learned code instead of raw features).

The "fused" score puts the two on one scale (the reconstruction NLL rather than the whole
negative ELBO: its KL part is itself a statement about the code's position, which the
neighbour distance makes better): each is centred by its median and divided by
its interquartile range over held-out normal rows (the validation split, never the
calibration split, so the conformal threshold keeps its guarantee), and the two are
averaged. Both parts are deterministic functions of one row, so the score is too.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

N_NEIGHBOURS = 5
# Reference codes kept: a random subset of the training codes beyond this many. It bounds the
# scoring time and memory; subsampling the reference set of a kNN detector costs little
# accuracy (Zimek et al., 2013). Measured against 20,000 (README, "Which score"): mean
# AUROC -0.0005 over the 14 tables (worst: mammography -0.004), +0.0002 over 8 Fashion classes.
MAX_REFERENCE_CODES = 2_048
# Rows ranked at once: a 256 x 2,048 float32 block (2 MB). Measured on 100,000 rows against
# 2,048 codes, one thread, two runs each: 64 rows 0.76-0.81 s, 128 0.52-0.53, 256 0.48-0.49,
# 512 0.50-0.58, 1,024 0.48-0.59 (the candidate search has a fixed cost per block; topk alone
# was fastest at 64 rows, and takes 0.86-0.88 s: README, "Where a fit's time goes").
_CHUNK = 256
# Reference codes per group of the candidate search (`_candidates`): column j of the ranking
# sits in group j mod (columns / _GROUP). Measured as above, at 256 and 512 rows: 4 0.43-0.81 s,
# 8 0.40-0.48, 16 0.42-0.52, 32 0.45-0.51.
_GROUP = 8


class LatentNeighbours(nn.Module):
    """Reference codes plus the centre/scale of (reconstruction NLL, k-NN distance); all buffers.

    The buffers travel in the VAE's state_dict, so a saved model scores exactly as fitted.
    """

    def __init__(self, n_reference: int, latent_dim: int, k: int = N_NEIGHBOURS):
        super().__init__()
        if n_reference < 1:
            raise ValueError(f"the latent neighbour model needs at least 1 reference code, got {n_reference}")
        self.k = max(1, min(int(k), int(n_reference)))
        self.register_buffer("codes", torch.zeros(int(n_reference), int(latent_dim)))
        self.register_buffer("center", torch.zeros(2))
        self.register_buffer("scale", torch.ones(2))

    @torch.no_grad()
    def fit(self, codes: torch.Tensor) -> "LatentNeighbours":
        """Store the reference codes (posterior means of training rows)."""
        if codes.shape != self.codes.shape:
            raise ValueError(f"expected {tuple(self.codes.shape)} reference codes, got {tuple(codes.shape)}")
        self.codes.copy_(codes)
        return self

    @property
    def norms(self) -> torch.Tensor:
        """Squared length of each reference code, for the ranking in `distance`."""
        return self.codes.square().sum(dim=1)

    @torch.no_grad()
    def distance(self, mu: torch.Tensor) -> torch.Tensor:
        """Euclidean distance from each code to its k-th nearest reference code, shape (n,).

        A matrix product ranks the reference codes (|r|^2 - 2 mu.r, fast but rounded by the
        row's place in the block), `_candidates` finds the 2k nearest by that ranking, and they
        get their distance computed exactly, in float64, from the two codes alone. So the k-th
        of those is the same number wherever the row sits, and the true k nearest are among the
        candidates unless the 2k nearest lie within float32 rounding of each other.
        """
        n_codes, dim = self.codes.shape
        pad = -n_codes % _GROUP  # whole groups for `_candidates`: padding ranks +inf, lies at +inf
        codes = torch.cat([self.codes, self.codes.new_zeros(pad, dim)]).to(mu.dtype)
        norms = torch.cat([self.norms, self.norms.new_full((pad,), float("inf"))]).to(mu.dtype)[None, :]
        exact_codes = torch.cat([self.codes, self.codes.new_full((pad, dim), float("inf"))]).double()
        n_candidates = min(2 * self.k, n_codes)
        out = mu.new_empty(len(mu))  # filled in place: no small tensors kept between the large ones
        for start in range(0, len(mu), _CHUNK):
            chunk = mu[start : start + _CHUNK]
            ranking = torch.addmm(norms, chunk, codes.T, alpha=-2)
            nearest = _candidates(ranking, n_candidates)
            exact = (exact_codes[nearest] - chunk.double()[:, None, :]).square().sum(dim=-1)
            out[start : start + _CHUNK] = exact.topk(self.k, dim=1, largest=False).values[:, -1].sqrt()
        return out

    @torch.no_grad()
    def set_scales(self, recon: torch.Tensor, distance: torch.Tensor) -> "LatentNeighbours":
        """Median and interquartile range of each part over held-out normal rows."""
        for i, values in enumerate((recon, distance)):
            values = values.double()
            q25, q50, q75 = torch.quantile(values, torch.tensor([0.25, 0.5, 0.75], dtype=values.dtype))
            iqr = float(q75 - q25)
            self.center[i] = float(q50)
            self.scale[i] = iqr if iqr > 1e-12 else max(float(values.std()) if len(values) > 1 else 0.0, 1.0)
        return self

    def fuse(self, recon: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        """Mean of the two robust z-scores: higher = more anomalous."""
        z_recon = (recon.double() - self.center[0].double()) / self.scale[0].double()
        z_dist = (distance.double() - self.center[1].double()) / self.scale[1].double()
        return 0.5 * (z_recon + z_dist)


def _candidates(ranking: torch.Tensor, m: int) -> torch.Tensor:
    """Column indices of the m smallest values in each row of `ranking` (n, width): the values
    `topk` gives, found about 1.5x faster on a CPU (README, "Where a fit's time goes").

    The m smallest values of a row lie in the m groups (of `_GROUP` columns) with the smallest
    minima: a group ranked below those m holds no value smaller than m others. So a value-only
    partition (numpy's is vectorised, where torch's topk sorts row by row) finds the m-th
    smallest group minimum, the m groups at or under it are kept, and a second partition over
    their m * _GROUP values keeps the m smallest, by threshold again. Ties at a threshold
    (duplicated training codes) go to the lower column, as equal values may; NaN rows to topk,
    and so does a ranking numpy cannot read (off the CPU, or in half precision).
    """
    n, width = ranking.shape
    n_groups = width // _GROUP
    readable = ranking.device.type == "cpu" and ranking.dtype in (torch.float32, torch.float64)
    if not readable or n_groups <= m or width % _GROUP:
        return ranking.topk(m, dim=1, largest=False, sorted=False).indices
    group_min = ranking.view(n, _GROUP, n_groups).amin(dim=1).numpy()  # strided groups: vectorised
    kept, nan = _smallest(group_min, m)
    columns = ((kept - (np.arange(n) * n_groups)[:, None])[:, :, None] + np.arange(_GROUP) * n_groups).reshape(n, -1)
    chosen, nan_again = _smallest(np.take_along_axis(ranking.numpy(), columns, axis=1), m)
    nearest = torch.from_numpy(columns.ravel()[chosen])
    redo = torch.from_numpy(np.flatnonzero(nan | nan_again))
    if len(redo):
        nearest[redo] = ranking[redo].topk(m, dim=1, largest=False, sorted=False).indices
    return nearest


def _smallest(values: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (n, m) of the m smallest values of each row, ties at the m-th broken by
    column order, and which rows could not be ranked (NaN): those get the first m columns."""
    kth = np.partition(values, m - 1, axis=1)[:, m - 1 : m]
    keep = values <= kth
    unranked = keep.sum(axis=1) != m
    if unranked.any():  # ties at the m-th value, or NaN
        rows = np.flatnonzero(unranked)
        below, at = values[rows] < kth[rows], values[rows] == kth[rows]
        keep[rows] = below | (at & (np.cumsum(at, axis=1) <= m - below.sum(axis=1, keepdims=True)))
        unranked = keep.sum(axis=1) != m
        keep[unranked] = np.arange(values.shape[1]) < m
    return np.flatnonzero(keep).reshape(len(values), m), unranked
