"""An accuracy benchmark run with another default training batch for every vaeguard detector.

`VAEAnomalyDetector(batch_size=...)` defaults to 128 (`TrainConfig.batch_size`). A larger batch
raises training FLOP/s (`targets.py --mnist-batch-size`), and it changes every fit: fewer
steps an epoch, and on small data more epochs (the step budget of `training.auto_epochs`).
This runs `mnist_protocols.py` or `oneclass_benchmarks.py` with the default set to N (their
other arguments pass through), to measure what that costs or buys in accuracy:

    python benchmarks/batch_size.py 256 mnist_protocols --protocols held-out --methods "vaeguard default" \\
        --no-pyod --threads 1 --out benchmarks/results/mnist_held_out_batch256.json
    python benchmarks/batch_size.py 256 oneclass_benchmarks --suites fashion --methods "vaeguard default" \\
        --threads 1 --out benchmarks/results/oneclass_fashion_batch256.json
"""

from __future__ import annotations

import importlib
import sys

import _common  # noqa: F401  (puts the repository first on sys.path)
import vaeguard.estimator

BENCHMARKS = ("mnist_protocols", "oneclass_benchmarks")

if __name__ == "__main__":
    if len(sys.argv) < 3 or not sys.argv[1].isdigit() or int(sys.argv[1]) < 1 or sys.argv[2] not in BENCHMARKS:
        sys.exit(f"usage: {sys.argv[0]} N {{{','.join(BENCHMARKS)}}} [its arguments]: N, the batch size, is a positive integer")
    # the keyword-only default every detector the benchmark builds without a batch_size reads
    vaeguard.estimator.VAEAnomalyDetector.__init__.__kwdefaults__["batch_size"] = int(sys.argv[1])
    sys.exit(importlib.import_module(sys.argv[2]).main(sys.argv[3:]))
