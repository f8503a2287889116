"""The one-class benchmark with another cap on the latent reference codes of the "fused" score.

`vaeguard.latent.MAX_REFERENCE_CODES` (2,048) bounds the codes a fitted model keeps, and so
the cost of every scored row. This runs `oneclass_benchmarks.py` with the cap set to N
(its other arguments pass through), to measure what fewer or more codes cost in accuracy:

    python benchmarks/reference_codes.py 1024 --suites tabular --methods "vaeguard default" --threads 1 \\
        --out benchmarks/results/oneclass_tabular_reference_1024.json \\
        --markdown benchmarks/results/oneclass_tabular_reference_1024.md
"""

from __future__ import annotations

import sys

import _common  # noqa: F401  (puts the repository first on sys.path)
import vaeguard.estimator

import oneclass_benchmarks

if __name__ == "__main__":
    if len(sys.argv) < 2 or not sys.argv[1].isdigit() or int(sys.argv[1]) < 1:
        sys.exit(f"usage: {sys.argv[0]} N [oneclass_benchmarks.py arguments]: N, the number of reference codes, is a positive integer")
    vaeguard.estimator.MAX_REFERENCE_CODES = int(sys.argv[1])  # read by fit, not only at import
    sys.exit(oneclass_benchmarks.main(sys.argv[2:]))
