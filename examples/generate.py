"""Use 4: the generative side of a fitted model: samples, interpolations, traversals (PNGs).

Fits on the normal digits 0-4 (MNIST from $VAEGUARD_MNIST_DIR or ../shared/data/mnist when
present, else scikit-learn's embedded 8x8 digits), then writes into --out:
  samples.png        new digits decoded from codes drawn from the prior
  interpolation.png  slerp and linear paths in latent space between two normal digits
  traversal.png      one digit's code with its most used latent dimension swept from -3 to 3
Blurry or all-alike samples would warn that the model has not learned the normal data.

Run: python examples/generate.py [--out generated] [--quick]
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np

from vaeguard import VAEAnomalyDetector
from vaeguard.digits import embedded_digits, mnist_digits
from vaeguard.mnist import FILES
from vaeguard.plots import image_strips_figure, rows_as_images, sample_grid_figure, save_figure

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path("generated"))
parser.add_argument("--quick", action="store_true", help="a shorter run (the test suite uses it)")
args = parser.parse_args()
start = time.perf_counter()

default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
folder = Path(os.environ.get("VAEGUARD_MNIST_DIR") or default)
if all((folder / name).exists() for names in FILES.values() for name in names):
    data, source = mnist_digits(folder, download=False), f"MNIST from {folder}"
    X = data.X_train[data.y_train < 5][: 2000 if args.quick else 10000]
    detector = VAEAnomalyDetector(input_shape=(1, 28, 28), epochs=3 if args.quick else 15, random_state=0)
else:
    data, source = embedded_digits(), f"scikit-learn's embedded 8x8 digits (no MNIST files in {folder})"
    X = data.X_train[data.y_train < 5]
    detector = VAEAnomalyDetector(input_shape=(1, 8, 8), epochs=30 if args.quick else 100, fpr=0.05, random_state=0)
print(f"data: {source}")
detector.fit(X)
shape = (1, *data.image_shape)

samples = detector.sample(64, random_state=1)  # decoder means, pixel values in [0, 1]
save_figure(sample_grid_figure(rows_as_images(samples, shape), "64 samples from the prior"), args.out / "samples.png")

a, b = X[np.argmax(data.y_train[data.y_train < 5][: len(X)] == 0)], X[np.argmax(data.y_train[data.y_train < 5][: len(X)] == 3)]
paths = [detector.interpolate(a, b, steps=10, method=m) for m in ("slerp", "linear")]
save_figure(image_strips_figure([rows_as_images(p, shape) for p in paths], ["slerp", "linear"], "0 → 3 in latent space"),
            args.out / "interpolation.png")

dim = int(detector.active_dims(X[:1000], k=1)[0])
values = np.linspace(-3, 3, 9)
sweep = detector.traverse(a, dim, values)
save_figure(image_strips_figure([rows_as_images(sweep, shape)], [f"z{dim}"], f"latent dimension {dim} from -3 to 3",
                                [f"{v:+.1f}" for v in values]), args.out / "traversal.png")

same = np.array_equal(samples, detector.sample(64, random_state=1))
print(f"wrote samples.png, interpolation.png, traversal.png to {args.out}/; same seed, same samples: {same}; "
      f"mean pixel of samples {samples.mean():.3f} vs training {X.mean():.3f} ({time.perf_counter() - start:.0f} s)")
