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
# Fewer cost more: 1,024 and 512 codes gave the 14 tables 0.9044 and 0.9040 (2,048: 0.9051),
# and their mean recall at the threshold 0.474 and 0.469 (0.490).
MAX_REFERENCE_CODES = 2_048
# Rows ranked at once: a 1,024 x 2,048 float32 block (8 MB). Measured on 200,000 rows of 8
# dimensions against 2,048 codes, one thread, the whole distance: 256 rows 0.49-0.50 s, 512 0.46,
# 1,024 0.44, 2,048 0.42 (each block costs some fixed work in numpy; 2,048 rows take 16 MB).
_CHUNK = 1_024
# The search (`_candidates`) bounds a row's m-th smallest ranking value by the minima of _SETS
# sets of columns, then keeps every column at or under the bound, group by group (_GROUP
# columns each). Measured as above: 4 columns a group 0.47-0.48 s, 8 0.43-0.45, 16 0.45-0.47;
# 32 sets 0.44-0.45, 64 sets 0.43-0.44. Candidates from `topk` instead: 1.02-1.04 s.
_GROUP = 8
_SETS = 64


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
        row's place in the block), `_candidates` keeps at least the 2k nearest by that ranking,
        and they get their distance computed exactly, in float64, from the two codes alone. So
        the k-th of those is the same number wherever the row sits, and the true k nearest are
        among the candidates unless the 2k nearest lie within float32 rounding of each other.
        """
        n_codes, dim = self.codes.shape
        n_candidates = min(2 * self.k, n_codes)
        pad = -n_codes % (_GROUP * _SETS)  # whole groups and sets: padding ranks +inf, lies at +inf
        # one product ranks: the codes' matrix (-2r) gains a last row |r|^2, each code of mu a 1
        ranker = torch.cat([
            torch.cat([-2 * self.codes, self.codes.new_zeros(pad, dim)]).T,
            torch.cat([self.norms, self.norms.new_full((pad,), float("inf"))])[None],
        ]).to(mu.dtype)
        exact_codes = torch.cat([self.codes, self.codes.new_full((pad, dim), float("inf"))]).double()
        lifted = mu.new_ones(min(len(mu), _CHUNK), dim + 1)  # [mu, 1]
        ranking = mu.new_empty(len(lifted), ranker.shape[1])
        out = mu.new_empty(len(mu))  # filled in place: no small tensors kept between the large ones
        for start in range(0, len(mu), _CHUNK):
            chunk = mu[start : start + _CHUNK]
            n = len(chunk)
            lifted[:n, :dim] = chunk
            torch.mm(lifted[:n], ranker, out=ranking[:n])
            out[start : start + n] = _kth_exact(ranking[:n], chunk.double(), exact_codes, self.k, n_candidates)
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


def _kth_exact(ranking: torch.Tensor, chunk: torch.Tensor, codes: torch.Tensor, k: int, m: int) -> torch.Tensor:
    """The k-th smallest exact distance from each row of `chunk` (float64) to `codes` (float64,
    padded at +inf), measured only for the candidates of `ranking`: the m smallest by `topk` off
    the CPU or in half precision, `_candidates` (a superset of those, found faster) on it."""
    if ranking.device.type != "cpu" or ranking.dtype not in (torch.float32, torch.float64) or m > _SETS:
        nearest = ranking.topk(m, dim=1, largest=False, sorted=False).indices
        return (codes[nearest] - chunk[:, None, :]).square().sum(dim=-1).kthvalue(k, dim=1).values.sqrt()
    rows, cols = _candidates(ranking, m)
    x, codes = chunk.numpy(), codes.numpy()
    diff = np.take(codes, cols, axis=0)
    diff -= np.take(x, rows, axis=0)
    squared = np.einsum("ij,ij->i", diff, diff)
    counts = np.bincount(rows, minlength=len(x))  # rows come in order
    table = np.full((len(x), max(int(counts.max()), k)), np.inf)
    table[rows, np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]] = squared
    kth = np.partition(table, k - 1, axis=1)[:, k - 1]
    short = np.flatnonzero(counts < k)  # rows the ranking cannot bound (NaN): every code
    with np.errstate(invalid="ignore"):  # an infinite code less the padding (+inf): NaN, ranked last
        for start in range(0, len(short), 64):  # 64 rows x every code at a time
            part = short[start : start + 64]
            kth[part] = np.partition(((codes[None] - x[part, None]) ** 2).sum(axis=-1), k - 1, axis=1)[:, k - 1]
    return torch.from_numpy(np.sqrt(kth))


def _candidates(ranking: torch.Tensor, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every value of `ranking` (n, width) at or under a bound on its row's
    m-th smallest, in row order: the m smallest among them, and ties, found in less than half
    the time `topk` takes (README, "Then a faster exact neighbour search").

    Column j sits in group j mod (width / _GROUP), and group g in set g mod _SETS. The m-th
    smallest set minimum bounds the row's m-th smallest value (m sets, m distinct columns at
    or under it), so a value under the bound lies in a group whose minimum is too: those
    groups are found first, then their values. Rows with NaN get no bound and no candidates.
    """
    n, width = ranking.shape
    n_groups = width // _GROUP
    group_min = ranking.view(n, _GROUP, n_groups).amin(dim=1)
    set_min = group_min.view(n, -1, _SETS).amin(dim=1).numpy()
    bound = np.sort(set_min, axis=1)[:, m - 1 : m]
    groups = np.flatnonzero(group_min.numpy() <= bound)
    group_rows, group_cols = np.divmod(groups, n_groups)
    values = ranking.numpy().reshape(n, _GROUP, n_groups)[group_rows, :, group_cols]  # (groups, _GROUP)
    kept = np.flatnonzero(values <= bound[group_rows])
    group, member = np.divmod(kept, _GROUP)
    return group_rows[group], group_cols[group] + member * n_groups
