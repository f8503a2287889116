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

import torch
from torch import nn

N_NEIGHBOURS = 5
# Reference codes kept: a random subset of the training codes beyond this many. It bounds the
# scoring time and memory; subsampling the reference set of a kNN detector costs little
# accuracy (Zimek et al., 2013). Measured against 20,000 (README, "Which score"): mean
# AUROC -0.0005 over the 14 tables (worst: mammography -0.004), +0.0002 over 8 Fashion classes.
MAX_REFERENCE_CODES = 2_048
# Rows ranked at once: a 64 x 2,048 float32 block (512 KB) stays in cache. Measured on 2M
# rows, `vaeguard score` peaked at 452 MB in three runs, against 483-539 MB with 512-row blocks
# (4 MB each, which fragmented the heap); 64 rows were also the fastest (137 ms per 20,000 rows
# against 185).
_CHUNK = 64


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
        row's place in the block), and the 2k nearest by that ranking get their distance
        computed exactly, in float64, from the two codes alone. So the k-th of those is the
        same number wherever the row sits, and the true k nearest are among the candidates
        unless the 2k nearest lie within float32 rounding of each other.
        """
        codes, norms, exact_codes = self.codes.to(mu.dtype), self.norms.to(mu.dtype)[None, :], self.codes.double()
        n_candidates = min(2 * self.k, len(codes))
        parts = []
        for chunk in mu.split(_CHUNK):
            ranking = torch.addmm(norms, chunk, codes.T, alpha=-2)
            nearest = ranking.topk(n_candidates, dim=1, largest=False, sorted=False).indices
            exact = (exact_codes[nearest] - chunk.double()[:, None, :]).square().sum(dim=-1)
            parts.append(exact.topk(self.k, dim=1, largest=False).values[:, -1].sqrt().to(mu.dtype))
        return torch.cat(parts) if parts else mu.new_empty(0)

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
