"""A local pixel-context model: how likely an image is from its local texture alone.

A likelihood model of images spends most of its bits on low-level texture (stroke edges,
background), so simple images (a "1": little ink) get high likelihood under any model, even
one trained on other shapes. Dividing by the likelihood of a *generic* model that sees only
local statistics cancels that term and leaves what the VAE knows about the global shape:
the likelihood ratio of Ren et al. (NeurIPS 2019), and the input-complexity correction of
Serra et al. (ICLR 2020), whose compressed length L(x) is a code length under a generic
model. Here the generic model is a context model of the kind lossless image compressors
use: each pixel is Bernoulli given its four binarised causal neighbours (west, north-west,
north, north-east: the template of JPEG-LS), with the same table for every position,
fitted by counting on the training data. Four neighbours measured best on MNIST: fewer
leave stroke texture in the score, more start to model shape and cancel the VAE's signal.
Its per-pixel negative log-likelihood is measured exactly like the VAE's Bernoulli
reconstruction term, so the two are in the same units (nats) and their difference is a
log-likelihood ratio.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# (row, column) offsets of the causal neighbours W, NW, N, NE: all precede the pixel in
# raster order.
CONTEXT_OFFSETS: tuple[tuple[int, int], ...] = ((0, -1), (-1, -1), (-1, 0), (-1, 1))
assert len(CONTEXT_OFFSETS) <= 8, "context indices are built in uint8"
_PAD = max(abs(v) for offset in CONTEXT_OFFSETS for v in offset)


class LocalContextModel(nn.Module):
    """p(x) = prod_i Bernoulli(x_i | binarised causal neighbours of pixel i), per channel.

    Works on flat rows of images of `input_shape` (C, H, W) with values in [0, 1]; the table
    of log-odds is a buffer, so it travels in the model's state_dict.
    """

    def __init__(self, input_shape: tuple[int, int, int], smoothing: float = 1.0):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.smoothing = float(smoothing)
        self.n_contexts = 1 << len(CONTEXT_OFFSETS)
        self.register_buffer("logits", torch.zeros(self.input_shape[0], self.n_contexts))

    def contexts(self, x: torch.Tensor) -> torch.Tensor:
        """Context index of every pixel, shape (n, C*H*W), offset per channel into the table."""
        channels, height, width = self.input_shape
        on = (x.view(-1, channels, height, width) > 0.5).to(torch.uint8)  # <= 8 bits fit
        padded = F.pad(on, (_PAD, _PAD, _PAD, 0))  # outside the image counts as background
        shifted = (
            padded[:, :, _PAD + dr : _PAD + dr + height, _PAD + dc : _PAD + dc + width] << bit
            for bit, (dr, dc) in enumerate(CONTEXT_OFFSETS)
        )
        index = functools.reduce(torch.bitwise_or, shifted).to(torch.int64)
        if channels > 1:
            index += torch.arange(channels, device=x.device).view(1, -1, 1, 1) * self.n_contexts
        return index.view(x.shape[0], -1)

    @torch.no_grad()
    def fit(self, X: torch.Tensor, batch_size: int = 4096) -> "LocalContextModel":
        """Set each context's probability to the (smoothed) mean pixel value seen in it.

        That mean maximises the Bernoulli log-likelihood of [0, 1] pixels given the context,
        so this is the maximum-likelihood fit, with `smoothing` pseudo-counts for each outcome.
        """
        size = self.logits.numel()
        ones = torch.zeros(size, dtype=torch.float64, device=self.logits.device)
        total = torch.zeros_like(ones)
        for batch in X.split(batch_size):
            index = self.contexts(batch).flatten()
            ones += torch.bincount(index, weights=batch.flatten().double(), minlength=size)
            total += torch.bincount(index, minlength=size).double()
        p = (ones + self.smoothing) / (total + 2 * self.smoothing)
        self.logits.copy_((torch.log(p) - torch.log1p(-p)).view_as(self.logits).float())
        return self

    def feature_nll(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel -log p(x_i | context), shape like x."""
        return F.binary_cross_entropy_with_logits(self.logits.flatten()[self.contexts(x)], x, reduction="none")

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample -log p(x) in nats, shape (n,)."""
        return self.feature_nll(x).sum(dim=-1)


def local_nll(X: np.ndarray, input_shape: tuple[int, int, int], fit_on: np.ndarray | None = None) -> np.ndarray:
    """-log p(x) per row of X under a LocalContextModel fitted on `fit_on` (default: X)."""
    model = LocalContextModel(input_shape)
    model.fit(torch.as_tensor(X if fit_on is None else fit_on, dtype=torch.float32))
    with torch.no_grad():
        return model.nll(torch.as_tensor(X, dtype=torch.float32)).double().numpy()
