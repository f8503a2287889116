"""The variational autoencoder: encoders, decoders, likelihoods and the ELBO terms.

Read top to bottom: the configuration, the two network shapes (MLP for vectors,
convolutional for images), the likelihoods, then the `VAE` module that ties them together.
Everything here works on flat inputs of shape (n, input_dim); the convolutional networks
reshape to (n, C, H, W) internally, so the rest of the package never has to care.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


LIKELIHOODS = ("bernoulli", "gaussian")
ARCHITECTURES = ("mlp", "conv")
LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0


@dataclass
class VAEConfig:
    """Everything needed to rebuild a VAE's architecture (stored as JSON in model files)."""

    input_dim: int
    latent_dim: int = 16
    hidden_dims: tuple[int, ...] = (256, 128)
    likelihood: str = "bernoulli"
    architecture: str = "mlp"
    input_shape: tuple[int, int, int] | None = None  # (C, H, W) of image rows: needed by conv
    conv_channels: tuple[int, ...] = (16, 32)  # Fashion-MNIST: as accurate as (32, 64) in half the time
    # (first feature, width) of each categorical column: a one-hot group of features whose
    # decoder outputs are the logits of one categorical likelihood
    groups: tuple[tuple[int, int], ...] = ()
    # a per-feature floor under the Gaussian output variance (buffer output_logvar_min, set from
    # the data by vaeguard.scorer.output_logvar_floor); files written before it have none
    variance_floor: bool = False
    # categorical columns scored relative to their levels (False in model files before it): a
    # column's -log p(level | z) in units of a uniform guess over its levels (divided by
    # log(levels)), minus the mean of that over the training rows holding the same level
    relative_levels: bool = False

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        self.conv_channels = tuple(int(c) for c in self.conv_channels)
        self.groups = tuple((int(s), int(w)) for s, w in self.groups)
        self.relative_levels = bool(self.relative_levels)
        if any(s < 0 or w < 1 or s + w > self.input_dim for s, w in self.groups):
            raise ValueError(f"groups must lie within the {self.input_dim} features, got {[list(g) for g in self.groups]}")
        if self.input_shape is not None:
            self.input_shape = tuple(int(s) for s in self.input_shape)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}"
            )
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if self.input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, got {self.input_dim}")
        if any(h < 1 for h in self.hidden_dims):
            raise ValueError(f"hidden_dims must be positive layer sizes, got {list(self.hidden_dims)}")
        if any(c < 1 for c in self.conv_channels):
            raise ValueError(f"conv_channels must all be >= 1, got {list(self.conv_channels)}")
        if self.architecture == "conv" and (self.input_shape is None or len(self.input_shape) != 3):
            raise ValueError("the conv architecture needs input_shape=(channels, height, width)")
        if self.input_shape is not None and math.prod(self.input_shape) != self.input_dim:
            raise ValueError(
                f"input_shape {self.input_shape} holds {math.prod(self.input_shape)} values, "
                f"but the data has {self.input_dim} features"
            )
        if self.architecture == "conv" and not self.conv_channels:
            raise ValueError("conv_channels must name at least one layer")

    def to_dict(self) -> dict:
        out = asdict(self)
        for flag in ("variance_floor", "relative_levels"):  # descriptions written before them stay what they were
            if not out[flag]:
                del out[flag]
        if not self.groups:  # a numeric model's description stays what it was
            del out["groups"]
        else:
            out["groups"] = [list(g) for g in self.groups]
        return out


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.SiLU()]
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- MLP


class MLPEncoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.body = _mlp([cfg.input_dim, *cfg.hidden_dims])
        width = cfg.hidden_dims[-1] if cfg.hidden_dims else cfg.input_dim
        self.head = nn.Linear(width, 2 * cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class MLPDecoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        widths = list(reversed(cfg.hidden_dims))
        self.body = _mlp([cfg.latent_dim, *widths])
        self.head = nn.Linear(widths[-1] if widths else cfg.latent_dim, cfg.input_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(z))


# ----------------------------------------------------------------------------- conv


class ConvEncoder(nn.Module):
    """Stride-2 3x3 convolutions: each halves H and W (rounding up), so any size works."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.input_shape = cfg.input_shape
        channels, height, width = cfg.input_shape
        layers: list[nn.Module] = []
        for c_out in cfg.conv_channels:
            layers += [nn.Conv2d(channels, c_out, 3, stride=2, padding=1), nn.SiLU()]
            channels, height, width = c_out, (height + 1) // 2, (width + 1) // 2
        self.convs = nn.Sequential(*layers)
        self.feature_shape = (channels, height, width)
        flat = channels * height * width
        hidden = cfg.hidden_dims[0] if cfg.hidden_dims else flat
        self.fc = nn.Sequential(nn.Flatten(), *(_mlp([flat, hidden]) if cfg.hidden_dims else []))
        self.head = nn.Linear(hidden, 2 * cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x.view(-1, *self.input_shape))
        return self.head(self.fc(h))


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder: transposed convolutions double H and W, then crop to size."""

    def __init__(self, cfg: VAEConfig, feature_shape: tuple[int, int, int]):
        super().__init__()
        self.input_shape = cfg.input_shape
        self.feature_shape = feature_shape
        flat = math.prod(feature_shape)
        hidden = cfg.hidden_dims[0] if cfg.hidden_dims else None
        self.fc = _mlp([cfg.latent_dim, hidden, flat]) if hidden else _mlp([cfg.latent_dim, flat])
        layers: list[nn.Module] = []
        channels = feature_shape[0]
        for c_out in reversed(cfg.conv_channels[:-1]):
            layers += [nn.ConvTranspose2d(channels, c_out, 4, stride=2, padding=1), nn.SiLU()]
            channels = c_out
        layers.append(nn.ConvTranspose2d(channels, cfg.input_shape[0], 4, stride=2, padding=1))
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.deconvs(self.fc(z).view(-1, *self.feature_shape))
        _, height, width = self.input_shape
        return h[:, :, :height, :width].reshape(z.shape[0], -1)


# ----------------------------------------------------------------------------- likelihoods


def has_nan(x: torch.Tensor) -> bool:
    """Whether x holds a NaN (a missing cell). Its sum is NaN then, and one reduction is about
    10x faster on a CPU than isnan(x).any(), which writes a mask first (150 us against 12 us
    for 128 MNIST rows: 5% of a training step). A sum where +inf meets -inf is NaN as well: a
    false alarm that takes the masked path, whose result is then the same."""
    return bool(torch.isnan(x.sum()))


def bernoulli_nll(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-feature -log p(x | z) for x in [0, 1] (continuous Bernoulli without its normaliser)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none")


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-feature -log N(x; mean, exp(logvar))."""
    return 0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 * torch.exp(-logvar))


def categorical_nll(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """-log p(level | z) of one-hot rows x (n, w), shape (n,). A row of zeros is a value never
    seen in training: as unlikely as the least likely level the model knows, halved (log 2 more)."""
    log_p = torch.log_softmax(logits, dim=-1)
    seen = (x * log_p).sum(dim=-1)
    return torch.where(x.sum(dim=-1) > 0.5, -seen, math.log(2.0) - log_p.min(dim=-1).values)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(N(mu, exp(logvar)) || N(0, I)), in closed form."""
    return 0.5 * torch.sum(mu**2 + torch.exp(logvar) - 1.0 - logvar, dim=-1)


# ----------------------------------------------------------------------------- the VAE


@dataclass
class ELBOTerms:
    """The negative ELBO of a batch, term by term: what training minimises and scoring reads."""

    feature_nll: torch.Tensor  # (n, input_dim): reconstruction -log p(x_i | z) per feature
    kl: torch.Tensor  # (n,): KL(q(z | x) || N(0, I))
    mu: torch.Tensor  # (n, latent_dim): the posterior mean, where the encoder puts each row

    @functools.cached_property
    def recon(self) -> torch.Tensor:
        """Per-sample reconstruction negative log-likelihood, shape (n,); summed once (a training
        step reads it for the loss and for the epoch's sums)."""
        return self.feature_nll.sum(dim=-1)

    def loss(self, beta: float = 1.0) -> torch.Tensor:
        """Per-sample reconstruction NLL + beta * KL (beta = 1: the negative ELBO)."""
        return self.recon + beta * self.kl


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.architecture == "conv":
            self.encoder = ConvEncoder(cfg)
            self.decoder = ConvDecoder(cfg, self.encoder.feature_shape)
        else:
            self.encoder = MLPEncoder(cfg)
            self.decoder = MLPDecoder(cfg)
        if cfg.likelihood == "gaussian":
            self.output_logvar = nn.Parameter(torch.zeros(cfg.input_dim))
            if cfg.variance_floor:
                self.register_buffer("output_logvar_min", torch.full((cfg.input_dim,), LOGVAR_MIN))
        if cfg.relative_levels:  # per one-hot feature: its level's mean term (vaeguard.scoring.fit_level_offsets)
            self.register_buffer("level_offsets", torch.zeros(cfg.input_dim))

    def likelihood_logvar(self) -> torch.Tensor:
        """The Gaussian output log-variance per feature, within its floor and LOGVAR_MAX."""
        logvar = self.output_logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)
        return torch.maximum(logvar, self.output_logvar_min) if self.cfg.variance_floor else logvar

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior q(z|x) = N(mu, exp(logvar)); logvar is clamped to keep exp() finite. A
        missing cell (NaN) is read as 0: the training mean of a standardised column."""
        if has_nan(x):
            x = torch.where(torch.isnan(x), 0.0, x)
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output: Bernoulli logits or Gaussian means, shape (..., input_dim)."""
        return self.decoder(z.reshape(-1, z.shape[-1])).view(*z.shape[:-1], self.cfg.input_dim)

    def mean_output(self, params: torch.Tensor) -> torch.Tensor:
        """The reconstruction E[x | z] in data space: a categorical column's level probabilities."""
        out = torch.sigmoid(params) if self.cfg.likelihood == "bernoulli" else params
        if self.cfg.groups:
            out = out.clone()
            for s, w in self.cfg.groups:
                out[..., s : s + w] = torch.softmax(params[..., s : s + w], dim=-1)
        return out

    def feature_nll(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Per-feature reconstruction negative log-likelihood, shape like x.

        A missing cell (NaN in x) adds nothing, and a row's observed cells are scaled by
        d / observed, so that rows with gaps sum to a likelihood on the scale of complete rows.
        """
        observed = None
        if has_nan(x):
            observed = ~torch.isnan(x)
            x = torch.where(observed, x, 0.0)  # computed, then dropped: never a NaN gradient
        if self.cfg.likelihood == "bernoulli":
            nll = bernoulli_nll(x, params)
        else:
            nll = gaussian_nll(x, params, self.likelihood_logvar())
        if self.cfg.groups:  # a categorical column: its whole likelihood on its first feature
            numeric, first = self._group_masks(x.device)
            nll = nll * numeric
            for s, w in self.cfg.groups:
                nll[..., s] = self.level_term(x[..., s : s + w], params[..., s : s + w], s)
        if observed is None:
            return nll
        if self.cfg.groups:  # columns present over columns, a categorical column counting once
            share = first.sum() / (observed & first).sum(dim=-1, keepdim=True).clamp(min=1)
        else:
            share = observed.shape[-1] / observed.sum(dim=-1, keepdim=True).clamp(min=1)
        return torch.where(observed, nll, 0.0) * share

    def level_term(self, x: torch.Tensor, logits: torch.Tensor, start: int) -> torch.Tensor:
        """The score of the categorical column at feature `start` (one-hot x, its logits), shape (n,).

        -log p(level | z); with `relative_levels`, divided by log(levels) and less the fitted
        mean for the row's level. Then a column counts alike whatever its number of levels,
        and a level that is merely rare, which the model reconstructs loosely in every row,
        scores about 0: what is left is how much worse this row's level is explained than in
        the training rows that hold it. A level never seen in training keeps its full term.
        """
        nll = categorical_nll(x, logits)
        if not self.cfg.relative_levels:
            return nll
        width = x.shape[-1]
        return nll / math.log(max(width, 2)) - (x * self.level_offsets[start : start + width]).sum(dim=-1)

    def _group_masks(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Which features are numeric (1.0) and which carry a column's likelihood (its first)."""
        numeric = torch.ones(self.cfg.input_dim, device=device)
        first = torch.ones(self.cfg.input_dim, dtype=torch.bool, device=device)
        for s, w in self.cfg.groups:
            numeric[s : s + w] = 0.0
            first[s + 1 : s + w] = False
        return numeric, first

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> ELBOTerms:
        """The negative ELBO of each row of x, in its terms.

        Without a generator z is the posterior mean, so the result is deterministic (scoring,
        validation); with one, z is a single reparameterised sample (training).
        """
        mu, logvar = self.encode(x)
        z = mu
        if generator is not None:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + torch.exp(0.5 * logvar) * eps
        return ELBOTerms(self.feature_nll(x, self.decode(z)), gaussian_kl(mu, logvar), mu)
