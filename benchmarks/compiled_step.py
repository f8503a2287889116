"""torch.compile on the MNIST MLP's training step: epoch seconds and compile seconds against eager (issue #23).

The network is the MLP a default detector builds for MNIST digits (bernoulli); 20,000 training
digits, the default batch of 128, Adam with gradient clipping as `training.train_vae` runs it.
Only full batches run, so a compiled step meets one input shape. Three ways, one after another:

  eager      `model(batch, generator).loss(1).mean()`, as training runs it
  graph      the negative ELBO under `torch.compile` (inductor; needs a C compiler), written for
             one graph: the noise drawn outside and passed in, the missing-cell branch left out
             (so not usable on rows with gaps)
  compiled   eager's function under `torch.compile`

"first step s" is the first step's wall time, compile included (in a fresh inductor cache, as a
user's first fit meets it; the first compiled way of the run also pays the compiler's start-up
in the process, so it goes first); "epoch s" the median of the epochs after the first.
Compiled kernels fuse and reorder the arithmetic, so weights differ from eager in the last bits.

    python benchmarks/compiled_step.py --threads 1 --epochs 6 --markdown benchmarks/results/compiled_step.md
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
import time

if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:  # a fresh cache: no compile is read back from an earlier run
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="vaeguard-inductor-")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

from _common import REPO_ROOT, log, markdown_table, median, publish, resolve_dir, run_header, set_threads

import torch
import torch.nn.functional as F

from vaeguard import VAEAnomalyDetector
from vaeguard.mnist import load_mnist
from vaeguard.model import LOGVAR_MAX, LOGVAR_MIN, VAE, gaussian_kl
from vaeguard.training import TrainConfig, adam, clip_gradients


def one_graph_loss(model: VAE):
    """The negative ELBO of a batch without a data-dependent branch: eps comes in, no NaN check."""

    def loss(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        mu, logvar = model.encoder(x).chunk(2, dim=-1)
        logvar = logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)
        logits = model.decoder(mu + torch.exp(0.5 * logvar) * eps)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=-1)
        return (recon + gaussian_kl(mu, logvar)).mean()

    return loss


def run(way: str, config, X: torch.Tensor, epochs: int, cfg: TrainConfig) -> dict:
    torch.manual_seed(0)
    model = VAE(config).train()
    optimizer, parameters = adam(model, cfg), list(model.parameters())
    generator = torch.Generator().manual_seed(0)
    if way == "graph":
        step_loss = torch.compile(one_graph_loss(model), dynamic=False)
        loss_of = lambda b: step_loss(b, torch.randn(len(b), config.latent_dim, generator=generator))  # noqa: E731
    else:
        plain = lambda b: model(b, generator).loss(1.0).mean()  # noqa: E731
        loss_of = torch.compile(plain, dynamic=False) if way == "compiled" else plain
    first, seconds = None, []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(X), generator=generator)
        for idx in order.split(cfg.batch_size):
            if len(idx) < cfg.batch_size:
                continue
            loss = loss_of(X.index_select(0, idx))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(parameters, cfg.grad_clip)
            optimizer.step()
            if first is None:
                first = time.perf_counter() - start
        seconds.append(time.perf_counter() - start)
        log(f"{way}: epoch {len(seconds)}/{epochs} {seconds[-1]:.3f} s")
    return {"first_step_s": first, "epoch_s": seconds, "median_epoch_s": median(seconds[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per way; the first is left out of the median")
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--ways", default="eager,graph,compiled", help="in this order; the first compiled way also pays the process's compiler start-up")
    parser.add_argument("--mnist-dir", default=None)
    parser.add_argument("--out", default="benchmarks/results/compiled_step.json")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    mnist_dir = resolve_dir(args.mnist_dir, "VAEGUARD_MNIST_DIR", REPO_ROOT.parent / "shared" / "data" / "mnist")
    X = load_mnist("train", mnist_dir, download=False)[0][: args.train_rows]
    config = VAEAnomalyDetector(random_state=0, epochs=1).fit(X[:2000]).config_
    cfg = TrainConfig()
    results = run_header("compiled_step") | {"settings": vars(args), "model": f"{config.architecture} {list(config.hidden_dims)}, {config.likelihood}"}
    X = torch.as_tensor(X)
    results["ways"] = {way: run(way, config, X, args.epochs, cfg) for way in args.ways.split(",")}
    base = results["ways"].get("eager")
    rows = [[way, f"{r['first_step_s']:.2f}", f"{r['median_epoch_s']:.3f}", f"{r['median_epoch_s'] / base['median_epoch_s']:.2f}x" if base else "-"]
            for way, r in results["ways"].items()]
    text = (f"{results['model']}, {len(X):,} digits, batch {cfg.batch_size}, {args.threads} thread(s); epoch s: median of epochs 2-{args.epochs}\n\n"
            + markdown_table(["way", "first step s (compile included)", "epoch s", "epoch / eager"], rows))
    publish(results, text, args.out, args.markdown)


if __name__ == "__main__":
    main()
