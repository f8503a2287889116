"""What fixed-size scoring blocks cost: scores/s with padded fixed blocks vs the old chunks.

vaeguard.scoring runs the network on blocks of exactly block_rows(cfg) rows (the last padded
with zero rows) so a row's score is bit-identical whatever batch it arrives in. This
compares, interleaved in one run on the same data and model:

  auto        the shipped scoring: scoring.block_rows(cfg) rows per block, last one padded
              (64 for the MNIST-shaped model, 1024 for the tabular one)
  fixed-N     the same with N rows per block
  chunks-1024 the previous scoring: unpadded chunks of 1024 rows (not batch-invariant)

on 10,000 rows and on single-row calls (a padded block of 256 is computed for one row),
for the default MNIST-shaped model (784 inputs, hidden 256,128, latent 16, elbo) and a
small tabular model (20 inputs, gaussian). Ratios are per-repeat, medians reported.

Run from the repository root:  python benchmarks/blocks.py [--repeats 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _common import REPO_ROOT, finish, fmt, log, markdown_table, median, run_header, set_threads, time_repeats, write_json, write_text


def _old_chunks(model, X, chunk=1024):
    import torch

    from vaeguard.model import gaussian_kl

    out = []
    with torch.no_grad():
        for start in range(0, len(X), chunk):
            x = torch.as_tensor(X[start : start + chunk], dtype=torch.float32)
            mu, logvar = model.encode(x)
            out.append(model.feature_nll(x, model.decode(mu)).sum(-1) + gaussian_kl(mu, logvar))
    return torch.cat(out).double().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blocks", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "blocks")
    args = parser.parse_args()
    set_threads(args.threads)
    import torch

    from vaeguard import scoring
    from vaeguard.model import VAE, VAEConfig

    results = run_header("blocks")
    rng = np.random.default_rng(0)
    cases = {
        "mnist-shaped (784, hidden 256,128, bernoulli)": (VAEConfig(input_dim=784, hidden_dims=(256, 128)), rng.random((args.rows, 784), dtype=np.float32)),
        "tabular (20, hidden 64,32, gaussian)": (VAEConfig(input_dim=20, hidden_dims=(64, 32), likelihood="gaussian"), rng.normal(size=(args.rows, 20)).astype(np.float32)),
    }

    def fixed(block):
        def run(model, X):
            saved = scoring.BLOCK_ROWS
            scoring.BLOCK_ROWS = block
            try:
                return scoring.anomaly_scores(model, X, "elbo")
            finally:
                scoring.BLOCK_ROWS = saved

        return run

    methods = {"auto (shipped: block_rows)": fixed(None), **{f"fixed-{b}": fixed(b) for b in args.blocks}}
    methods["chunks-1024 (before)"] = _old_chunks
    rows = []
    results["cases"] = {}
    for name, (cfg, X) in cases.items():
        torch.manual_seed(0)
        model = VAE(cfg).eval()
        for method in methods.values():  # warm-up
            method(model, X[:2048])
        for size, label in [(len(X), f"{len(X):,} rows"), (1, "1 row")]:
            data = X[:size]
            calls = 1 if size > 1 else 50
            times = {m: [] for m in methods}
            for _ in range(args.repeats):  # interleaved: the machine's load hits every method alike
                for m, fn in methods.items():
                    times[m] += time_repeats(lambda: [fn(model, data) for _ in range(calls)], 1)
            base = "chunks-1024 (before)"
            entry = {}
            for m in methods:
                per_s = [size * calls / t for t in times[m]]
                ratio = median([b / t for b, t in zip(times[base], times[m])])
                entry[m] = {"rows_per_s_median": median(per_s), "times_s": times[m], "speed_vs_before": ratio}
                rows.append([f"{name}, {label}", m, fmt(median(per_s)), fmt(ratio)])
                log(f"{name} (block {scoring.block_rows(cfg)}) {label} {m}: {median(per_s):,.0f} rows/s, x{ratio:.3f} vs before")
            results["cases"][f"{name}, {label}"] = entry
    table = markdown_table(["data", "scoring", "rows/s (median)", "speed vs before (paired median)"], rows)
    text = f"### Fixed-size scoring blocks: throughput cost\n\n{table}\n\n{args.repeats} interleaved repeats, {args.threads} torch thread(s); random-weight models (throughput only).\n"
    print(text)
    write_json(args.out.with_suffix(".json"), finish(results))
    write_text(args.out.with_suffix(".md"), text)


if __name__ == "__main__":
    main()
