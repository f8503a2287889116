"""The training range of each pixel: an image that leaves it is unlike every training image.

A VAE's likelihood and the complexity corrections of vaeguard.complexity read what an image
looks like, not where its ink is relative to everything seen in training. Digits never ink
the frame's border; a garment, a scan with a margin or a frame from another camera does. By
exchangeability, a new normal image lands above the largest (or below the smallest) of the n
training values of a pixel with probability at most 1 / (n + 1), so each pixel outside its
training range costs log(n + 1) nats: the code length of that event under the training data's
own empirical distribution, added to the reconstruction NLL every score reads. Normal images
almost never pay it (about 0.6% of MNIST test digits pay it once or more, against 20,000
training digits); images from elsewhere pay it on many pixels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .model import has_nan


def nan_extrema(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(min, max) of x along `dim`, NaN left out (+inf, -inf where every value is NaN); x is
    copied only when it holds a NaN."""
    if not has_nan(x):
        return x.amin(dim=dim), x.amax(dim=dim)
    missing = torch.isnan(x)
    return x.masked_fill(missing, math.inf).amin(dim=dim), x.masked_fill(missing, -math.inf).amax(dim=dim)


class PixelRange(nn.Module):
    """Per-pixel [low, high] of the training rows (as the network reads them) and the cost of
    leaving it, log(n + 1) nats for n training rows. Buffers, so they travel in the model file."""

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("low", torch.zeros(n_features))
        self.register_buffer("high", torch.zeros(n_features))
        self.register_buffer("cost", torch.zeros(1))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> "PixelRange":
        """Set the range from the training rows x (n, d); ValueError for no rows. A missing
        (NaN) value is left out; a pixel missing from every row gets the widest finite range."""
        if len(x) == 0:
            raise ValueError("the pixel range needs at least one training row")
        low, high = nan_extrema(x, dim=0)
        widest = torch.finfo(self.low.dtype).max  # never observed: any value fits
        self.low.copy_(torch.where(torch.isfinite(low), low, -widest))
        self.high.copy_(torch.where(torch.isfinite(high), high, widest))
        self.cost.fill_(math.log(len(x) + 1))
        return self

    def _outside(self, x: torch.Tensor) -> torch.Tensor:
        return (x < self.low) | (x > self.high)  # False at a missing pixel

    def feature_nll(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d): `cost` at each pixel outside its training range, 0 elsewhere (and at a
        missing pixel)."""
        return self._outside(x).to(x.dtype) * self.cost

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """(n,): the cost of each row, `cost` times its pixels outside the training range."""
        return self._outside(x).sum(dim=1).to(x.dtype) * self.cost
