"""Training loop: Adam on the negative ELBO, KL warm-up, early stopping on validation loss."""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .distributed import world
from .errors import TrainingError
from .model import VAE

HISTORY_KEYS = ("train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl")


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 128
    learning_rate: float = 1e-3
    beta: float = 1.0
    kl_warmup_epochs: int = 0
    patience: int = 10
    grad_clip: float = 10.0
    weight_decay: float = 0.0
    verbose: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


# Early stopping decides when training ends; the epoch cap only bounds its cost. On a small
# table an epoch is a few gradient steps (100 rows: one step of 128), so 50 epochs stop the
# model long before it converges, and 10 epochs without a better validation loss are 10
# noisy steps. With epochs="auto" and patience="auto" both count steps on small data: the cap
# is 50 epochs or MIN_STEPS steps, the patience 10 epochs or MIN_PATIENCE_STEPS steps,
# whichever is more (README, "Which default"). On large data the cap is MAX_STEPS steps
# when 50 epochs would take more: a 200,000-row table (1,094 steps an epoch) stops after 14
# epochs, not 50 (issue #23; every benchmark set, MNIST held-out included, takes fewer steps).
MIN_STEPS = 2_000
MAX_STEPS = 15_000
MIN_PATIENCE_STEPS = 100
# Training steps between checks that the loss is finite: a check reads the loss back to the
# host (a CUDA synchronisation), so it is not done on every step.
CHECK_EVERY = 64


def _epochs_for(steps: int, n_train: int, batch_size: int) -> int:
    return math.ceil(steps / max(1, math.ceil(n_train / batch_size)))


def auto_epochs(n_train: int, batch_size: int) -> int:
    """The epoch cap for epochs="auto": TrainConfig.epochs, at least enough epochs for MIN_STEPS
    steps and at most enough for MAX_STEPS."""
    budget = min(TrainConfig.epochs, _epochs_for(MAX_STEPS, n_train, batch_size))
    return max(budget, _epochs_for(MIN_STEPS, n_train, batch_size))


def auto_patience(n_train: int, batch_size: int) -> int:
    """Epochs without improvement before stopping, for patience="auto": TrainConfig.patience, or
    enough epochs for MIN_PATIENCE_STEPS steps."""
    return max(TrainConfig.patience, _epochs_for(MIN_PATIENCE_STEPS, n_train, batch_size))


def adam(model: VAE, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam with its fused kernel where this torch has one for the device (CPU from torch 2.4,
    CUDA): one kernel per step for all parameters, where the plain loop runs about a dozen ops
    per tensor. The update is Adam's, rounded in another order (weights differ by about 1e-7
    after 400 steps); measured in the README ("Where a fit's time goes")."""
    params = list(model.parameters())
    try:
        return torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True)
    except RuntimeError:  # an older torch without the fused kernel for this device
        return torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def kl_weight(epoch: int, cfg: TrainConfig) -> float:
    """beta, ramped linearly from near zero over the first kl_warmup_epochs epochs."""
    if cfg.kl_warmup_epochs <= 0:
        return cfg.beta
    return cfg.beta * min(1.0, (epoch + 1) / (cfg.kl_warmup_epochs + 1))


def clip_gradients(parameters: list[torch.Tensor], max_norm: float) -> None:
    """torch.nn.utils.clip_grad_norm_: every gradient scaled by max_norm / (total norm + 1e-6)
    when that is below 1. torch multiplies by the clamped factor, 1.0 included, so as not to
    read the norm back from an accelerator; on the CPU reading it costs nothing, and the
    gradients are left alone below the limit (the same numbers: x * 1.0 is x). With torch's
    grouping of the tensors left out too, an epoch of a small table model takes about 8% less
    time (README, "Where a fit's time goes")."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads or grads[0].device.type != "cpu":
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        return
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    factor = max_norm / (total + 1e-6)
    if not factor >= 1.0:  # below the limit, or NaN: scaled as torch scales them
        for g in grads:
            g.mul_(factor)


def _check_finite(loss: torch.Tensor, epoch: int, cfg: TrainConfig) -> None:
    """TrainingError when `loss` (a running sum of the epoch's losses) is not finite."""
    if not torch.isfinite(loss):
        raise TrainingError(
            f"the training loss became {loss.item()} in epoch {epoch + 1}. Try a lower "
            f"learning_rate (now {cfg.learning_rate}), standardising the inputs, or "
            "likelihood='gaussian' for data outside [0, 1]; check the data for extreme values."
        )


@torch.inference_mode()
def evaluate_loss(model: VAE, data: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean (reconstruction NLL, KL) over `data`, with z at the posterior mean (deterministic)."""
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=data.device)  # read back once, at the end
    for batch in data.split(batch_size):
        terms = model(batch)
        sums += torch.stack([terms.feature_nll.sum(), terms.kl.sum()]).double()
    recon_sum, kl_sum = sums.tolist()
    n = max(len(data), 1)
    return recon_sum / n, kl_sum / n


def train_vae(
    model: VAE,
    X_train: np.ndarray,
    X_val: np.ndarray | None,
    cfg: TrainConfig,
    seed: int,
    device: torch.device,
    jitter: np.ndarray | None = None,
) -> dict[str, list[float]]:
    """Train `model` in place on rows held in memory; return the per-epoch history.

    With a validation set, the weights of the epoch with the lowest validation negative ELBO
    (at full beta) are restored at the end, and training stops after `patience` epochs
    without improvement.
    """
    rank, size = world()
    if size > 1:
        # DistributedDataParallel: an equal share of the rows per process (every process must
        # take as many steps), and a per-process batch that keeps one step's rows as configured.
        share = len(X_train) // size
        X_train = X_train[rank * share : (rank + 1) * share]
    train = torch.as_tensor(X_train, dtype=torch.float32, device=device)
    batch_size = max(1, min(max(1, cfg.batch_size // size), len(train)))

    def epoch_batches(epoch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        order = torch.randperm(len(train), generator=generator, device=device)
        for idx in order.split(batch_size):
            yield train.index_select(0, idx)  # the rows train[idx] gives, copied faster

    return train_vae_batches(model, epoch_batches, X_val, cfg, seed, device, jitter)


def train_vae_batches(
    model: VAE,
    epoch_batches: Callable[[int, torch.Generator], Iterable[torch.Tensor | np.ndarray]],
    X_val: np.ndarray | None,
    cfg: TrainConfig,
    seed: int,
    device: torch.device,
    jitter: np.ndarray | None = None,
) -> dict[str, list[float]]:
    """The training loop: `epoch_batches(epoch, generator)` gives each epoch's mini-batches.

    Rows in memory (`train_vae`) and rows streamed from disk (`vaeguard.streaming`) both come
    through here, so early stopping, KL warm-up and the history are the same for both.

    `jitter` (per feature, in the network's units; None or zeros: none): each training value
    gets uniform noise of that width, drawn afresh every step (uniform dequantisation). A
    feature recorded in steps (a flag, a count) is then seen as the interval its value stands
    for, not a point, so the Gaussian likelihood cannot shrink its variance below the
    rounding's (step**2 / 12) and a feature that sits on one value in nearly every training
    row does not charge a new value a step away a score of its own. Validation and scoring
    read the recorded values.
    """
    model.to(device)
    val = None if X_val is None or len(X_val) == 0 else torch.as_tensor(X_val, dtype=torch.float32, device=device)
    rank, size = world()
    # In a process group, gradients are averaged across processes after each backward pass;
    # every process holds the same weights, so validation and early stopping agree.
    step_model = model if size == 1 else torch.nn.parallel.DistributedDataParallel(model)
    generator = torch.Generator(device=device).manual_seed(seed + rank)
    optimizer = adam(model, cfg)
    parameters = list(model.parameters())  # walked once, not by every clipping step
    history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS if val is not None or key.startswith("train")}
    history["epoch_seconds"] = []
    best_loss, best_state, stale = math.inf, None, 0
    widths = None
    if jitter is not None and np.any(jitter > 0):
        widths = torch.as_tensor(jitter, dtype=torch.float32, device=device)
        # its own stream: the latent samples are drawn as without it
        noise = torch.Generator(device=device).manual_seed(seed + rank + 7_919)

    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        model.train()
        weight = kl_weight(epoch, cfg)
        # Sums stay on the device (float64: the same arithmetic as Python floats) and are read
        # back every CHECK_EVERY steps, not per step.
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # recon, KL, loss
        n_seen = 0
        for step, batch in enumerate(epoch_batches(epoch, generator), start=1):
            batch = torch.as_tensor(batch, dtype=torch.float32, device=device)
            if widths is not None:
                batch = batch + (torch.rand(batch.shape, generator=noise, device=device) - 0.5) * widths
            terms = step_model(batch, generator)
            loss = terms.loss(weight).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(parameters, cfg.grad_clip)
            optimizer.step()
            sums += torch.stack([terms.recon.detach().sum(), terms.kl.detach().sum(), loss.detach()]).double()
            n_seen += len(batch)
            if step % CHECK_EVERY == 0:
                _check_finite(sums[2], epoch, cfg)
        if n_seen == 0:
            raise TrainingError("no training rows: every row went to validation or calibration")
        _check_finite(sums[2], epoch, cfg)
        recon_sum, kl_sum = sums[:2].tolist()
        history["train_recon"].append(recon_sum / n_seen)
        history["train_kl"].append(kl_sum / n_seen)
        history["train_loss"].append(history["train_recon"][-1] + cfg.beta * history["train_kl"][-1])

        message = f"epoch {epoch + 1:>3}/{cfg.epochs}  train -ELBO {history['train_loss'][-1]:.4f}"
        if val is not None:
            recon, kl = evaluate_loss(model, val, batch_size=1024)
            val_loss = recon + cfg.beta * kl
            if not math.isfinite(val_loss):
                raise TrainingError(
                    f"the validation loss became {val_loss} in epoch {epoch + 1}; "
                    f"try a lower learning_rate (now {cfg.learning_rate}) or standardised inputs"
                )
            history["val_recon"].append(recon)
            history["val_kl"].append(kl)
            history["val_loss"].append(val_loss)
            message += f"  val -ELBO {val_loss:.4f}"
            # Only epochs at full beta compete: during warm-up the objective is a different one.
            if epoch + 1 >= cfg.kl_warmup_epochs:
                if val_loss < best_loss:
                    best_loss, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
                else:
                    stale += 1
        history["epoch_seconds"].append(time.perf_counter() - start)
        stopping = val is not None and stale >= cfg.patience
        # about ten lines per run: every `log_every`-th epoch, the last, and an early stop
        log_every = max(1, cfg.epochs // 10)
        if cfg.verbose and rank == 0 and ((epoch + 1) % log_every == 0 or epoch + 1 == cfg.epochs or stopping):
            seconds = history["epoch_seconds"][-1]
            print(f"{message}  ({n_seen / seconds:,.0f} samples/s)", file=sys.stderr)
        if stopping:
            if cfg.verbose and rank == 0:
                print(f"early stop: no better validation -ELBO for {cfg.patience} epochs", file=sys.stderr)
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history
