"""Do two versions of the package score alike? Fit with random_state=0, save the scores, compare.

A speed change that should not move results is checked by running this script once with the
package before the change and once after, then comparing the two files:

    git archive 1ae7588 vaeguard | tar -x -C /tmp/base       # the package before the change
    python benchmarks/same_scores.py --package /tmp/base --out /tmp/before.npz
    python benchmarks/same_scores.py --out /tmp/after.npz
    python benchmarks/same_scores.py --compare /tmp/before.npz /tmp/after.npz

Cases (each `VAEAnomalyDetector(random_state=0, ...)`, one thread): `fashion` (class 0,
4,900 training images, the conv model, `--epochs` epochs), `mnist` (digit 0, the MLP,
`--epochs` epochs), `table` (20,000 rows of a 10-column pattern, the default epochs) and
`satellite` (the default epochs). The comparison prints, per case, the largest absolute and
relative score difference, whether the scores are bit-identical, and the training histories'.
Standalone (no `_common`): `--package` must be importable before anything imports vaeguard.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("VAEGUARD_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
MNIST = Path(os.environ.get("VAEGUARD_MNIST_DIR", DATA / "mnist"))


def table(n: int, seed: int) -> np.ndarray:
    W = np.random.default_rng(12345).normal(size=(3, 10))
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) @ W + 0.2 * rng.normal(size=(n, 10))


def cases(epochs: int) -> dict:
    with np.load(DATA / "fashion-oneclass" / "fashion0.npz") as d:
        x, y = d["x"].astype(np.float64) / 255.0, d["y"]
    normal = np.flatnonzero(y == 0)[np.random.default_rng(0).permutation(int((y == 0).sum()))]
    with gzip.open(MNIST / "train-images-idx3-ubyte.gz") as fh:
        images = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255.0
    with gzip.open(MNIST / "train-labels-idx1-ubyte.gz") as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8)
    with np.load(DATA / "tabular" / "satellite.npz") as d:
        sat = d["x"].astype(np.float64)
    return {
        "fashion": (x[normal[:4900]], x, {"input_shape": (1, 28, 28), "epochs": epochs}),
        "mnist": (images[labels == 0][:5000], images[50000:55000], {"epochs": epochs}),
        "table": (table(20_000, 0), table(5_000, 1), {}),
        "satellite": (sat[: len(sat) // 2], sat, {}),
    }


def run(args) -> None:
    if args.package:
        sys.path.insert(0, str(Path(args.package).resolve()))
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # the estimator's threads="auto" honours it
    import vaeguard
    from vaeguard import VAEAnomalyDetector

    print(f"vaeguard from {vaeguard.__file__}", file=sys.stderr)
    out = {}
    for name, (X, X_test, params) in cases(args.epochs).items():
        if args.cases and name not in args.cases.split(","):
            continue
        start = time.perf_counter()
        det = VAEAnomalyDetector(random_state=0, **params).fit(X)
        seconds = time.perf_counter() - start
        out[f"{name}/scores"] = det.score_samples(X_test)
        out[f"{name}/train_loss"] = np.asarray(det.history_["train_loss"])
        out[f"{name}/seconds"] = np.asarray(seconds)
        print(f"{name}: fit {seconds:.1f} s, {det.n_epochs_} epochs", file=sys.stderr)
    np.savez(args.out, **out)


def compare(a_path: str, b_path: str) -> None:
    a, b = np.load(a_path), np.load(b_path)
    print("| case | bit-identical scores | max abs diff | max rel diff (of IQR) | history identical | fit s before -> after |")
    print("| --- | --- | ---: | ---: | --- | --- |")
    for key in sorted(k for k in a.files if k.endswith("/scores") and k in b.files):
        case = key.split("/")[0]
        x, y = a[key], b[key]
        diff = np.abs(x - y)
        iqr = np.subtract(*np.percentile(x, [75, 25]))
        hist = np.array_equal(a[f"{case}/train_loss"], b[f"{case}/train_loss"])
        print(f"| {case} | {np.array_equal(x, y)} | {diff.max():.3g} | {diff.max() / iqr:.3g} | {hist} | "
              f"{float(a[f'{case}/seconds']):.1f} -> {float(b[f'{case}/seconds']):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default=None, help="folder holding the vaeguard package to test (default: this checkout)")
    parser.add_argument("--cases", default=None, help="comma-separated: fashion,mnist,table,satellite (default: all)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the fashion and mnist fits (default 5)")
    parser.add_argument("--out", default="/tmp/vaeguard_scores.npz")
    parser.add_argument("--compare", nargs=2, metavar="NPZ", default=None)
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
    else:
        if not args.package:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        run(args)


if __name__ == "__main__":
    main()
