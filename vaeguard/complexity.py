"""Input complexity: how likely an image is from its local texture alone.

Two generic models of images, one per likelihood: a pixel-context model of near-binary images
(`LocalContextModel`, read by the "ratio" score) and a lossless coder of grey levels
(`ImageCodeLength`, read by the "fused" score of grey-level images).

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
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .model import has_nan
from .pixelrange import nan_extrema

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


class ImageCodeLength(nn.Module):
    """L(x): the length of an image, in nats, under a generic lossless coder of grey levels.

    The coder is LOCO-I's (JPEG-LS): each pixel is predicted from its west, north and
    north-west neighbours by the median edge detector, and the residuals are coded with a
    discretised Laplace distribution at the grey-level step `step`, its scale the image's
    mean absolute residual (per channel; at least half a step). That is d * (1 + log(2b / step))
    nats for d pixels and scale b: a flat image costs d nats, a textured one more. As a
    compressor falls back to storing a block raw, a channel that spans at most 256 steps costs
    at most d * log(256), its pixels stored as 8-bit levels: uniform noise would cost about 6.1
    nats a pixel under the Laplace, more than raw, and look simpler than it is (the one bit
    that says which code was used is the same for every image, and left out). The input
    complexity of Serra et al. (ICLR 2020), who used real compressors; this one reads a 28x28
    image in 11 us on one core, where zlib takes 60-85 us, as long as the network, and it
    kept near detection where zlib's length lost it (README, "Which score").

    Subtracting L(x) from the reconstruction NLL (score "fused" on grey-level images) discounts
    how simple an image is: a blank frame or a digit is not normal for a model of clothing just
    because it is easy to predict. `step` is the training images' grey-level range over 255 (the
    8-bit step for images in [0, 1]), a buffer that travels in the model's state_dict.
    """

    def __init__(self, input_shape: tuple[int, int, int]):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.register_buffer("step", torch.ones(1))

    @torch.no_grad()
    def fit(self, X: np.ndarray) -> "ImageCodeLength":
        """Set the grey-level step from the training images (raw rows, NaN for a missing pixel)."""
        X = np.asarray(X)
        spread = float(np.nanmax(X) - np.nanmin(X)) if np.isfinite(X).any() else 0.0
        self.step.fill_(spread / 255 if spread > 0 else 1.0)
        return self

    def _pixels(self, X: np.ndarray) -> torch.Tensor:
        """The raw rows as a float32 tensor (n, C, H, W), copied only when X is not already
        float32, contiguous and writeable (torch warns on a read-only array)."""
        channels, height, width = self.input_shape
        return torch.from_numpy(np.require(X, np.float32, ["C", "W"])).view(len(X), channels, height, width)

    @torch.no_grad()
    def residuals(self, X: np.ndarray) -> torch.Tensor:
        """|pixel - its median-edge-detector prediction| of each raw row, float32 (n, C, H*W).
        Pixels outside the image count as 0; a residual touching a missing pixel is NaN."""
        return self._residuals(self._pixels(X))

    def _residuals(self, x: torch.Tensor) -> torch.Tensor:
        channels, height, width = self.input_shape
        padded = F.pad(x, (1, 0, 1, 0))
        west, north, north_west = padded[..., 1:, :-1], padded[..., :-1, 1:], padded[..., :-1, :-1]
        # the median edge detector: the median of west, north and west + north - north-west
        predicted = torch.clamp(west + north - north_west, torch.minimum(west, north), torch.maximum(west, north))
        return (x - predicted).abs_().view(len(x), channels, height * width)

    @torch.no_grad()
    def nats(self, X: np.ndarray) -> np.ndarray:
        """L(x) of each raw row (n, C*H*W), float64 (n,). A residual touching a missing pixel
        (NaN) is left out of the mean. Residuals in float32 (11 us per 28x28 image on one
        core), their mean and the logarithm in float64."""
        channels, height, width = self.input_shape
        pixels = self._pixels(X)
        residual = self._residuals(pixels).double()
        scale = torch.nanmean(residual, dim=2) if has_nan(residual) else residual.mean(dim=2)
        step = float(self.step)
        scale = torch.nan_to_num(scale, nan=0.0).clamp_(min=step / 2)  # NaN: a channel with no residual left
        per_pixel = 1.0 + torch.log(2.0 * scale / step)
        x = pixels.view(len(X), channels, height * width)
        low, high = nan_extrema(x, dim=2)  # a missing pixel is left out of the span
        span = high - low  # -inf for a channel with no pixel left: it gets no raw code
        raw = torch.where(span.double() <= 255.5 * step, math.log(256), math.inf)
        return (height * width * torch.minimum(per_pixel, raw)).sum(dim=1).numpy()
