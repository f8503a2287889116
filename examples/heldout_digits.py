"""Use 1: fit on normal digits, flag the held-out classes, write the HTML report.

Reads MNIST from $VAEGUARD_MNIST_DIR or ../shared/data/mnist (beside the clone) when the four
IDX files are there, else uses scikit-learn's embedded 8x8 digits (offline, no download); the
first line printed says which. Runs in well under a minute on 2 CPU cores.

Run: python examples/heldout_digits.py [--out digits-example-report] [--quick]
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np

from vaeguard import VAEAnomalyDetector
from vaeguard.digits import DigitData, embedded_digits, mnist_digits, run_heldout_digits
from vaeguard.mnist import FILES


def digit_data() -> tuple[DigitData, str]:
    """MNIST when its files are on disk (never downloads here), else the embedded digits."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
    folder = Path(os.environ.get("VAEGUARD_MNIST_DIR") or default)
    if all((folder / name).exists() for names in FILES.values() for name in names):
        return mnist_digits(folder, download=False), f"MNIST from {folder}"
    return embedded_digits(), f"scikit-learn's embedded 8x8 digits (no MNIST files in {folder})"


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path("digits-example-report"))
parser.add_argument("--quick", action="store_true", help="a smaller, shorter run (the test suite uses it)")
args = parser.parse_args()

start = time.perf_counter()
data, source = digit_data()
print(f"data: {source}")
if data.image_shape == (28, 28):
    # Keep the example under a minute: 1,000 training images per digit, 10 epochs.
    keep = np.concatenate([np.flatnonzero(data.y_train == d)[: 300 if args.quick else 1000] for d in range(10)])
    data = DigitData(data.X_train[keep], data.y_train[keep], data.X_test, data.y_test, data.image_shape)
    detector = VAEAnomalyDetector(epochs=3 if args.quick else 10, random_state=0)
else:
    detector = VAEAnomalyDetector(epochs=30 if args.quick else 100, fpr=0.05, random_state=0)
normal = [0, 1, 2, 3, 4]
metrics = run_heldout_digits(data, normal, detector, args.out, title="vaeguard example: held-out digits")
held_out = "  ".join(f"{digit}: {auroc:.3f}" for digit, auroc in metrics["per_group"].items())
print(f"normal digits 0-4; AUROC per held-out digit  {held_out}")
print(f"overall AUROC {metrics['auroc']:.3f}; report {args.out / 'report.html'} ({time.perf_counter() - start:.0f} s)")
