"""The two image networks on images the #23 choice never saw: scikit-learn's embedded 8x8 digits, one-class.

Issue #23 made the MLP the default for grey-level images (README, "Which network"), chosen on
the Fashion-MNIST speed targets. This runs the one-class protocol on another grey-level set:
normal = one digit's rows of the embedded digits' training half (`vaeguard.digits.embedded_digits`,
about 90 images), test = the whole test half (about 900 images), anomaly = every other digit.
Methods, in the same run: the default (the MLP), `architecture="conv"`, kNN distance (k=5) and
PyOD's VAE when installed. AUROC per digit, mean, and the median fit seconds.

    python benchmarks/image_networks.py --threads 1 --markdown benchmarks/results/image_networks.md
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.metrics import roc_auc_score

from _common import REPO_ROOT, fmt, log, markdown_table, median, optional_version, publish, run_header, set_threads
from oneclass_benchmarks import KNNDistance


def methods(use_pyod: bool) -> dict:
    """name: (build, anomaly score of a fitted method)."""
    from vaeguard import VAEAnomalyDetector

    out = {
        "vaeguard default (MLP)": (lambda: VAEAnomalyDetector(random_state=0, input_shape=(1, 8, 8)), lambda m, X: m.anomaly_score(X)),
        "vaeguard conv": (lambda: VAEAnomalyDetector(random_state=0, input_shape=(1, 8, 8), architecture="conv"), lambda m, X: m.anomaly_score(X)),
        "kNN distance (k=5)": (KNNDistance, lambda m, X: m.anomaly_score(X)),
    }
    if use_pyod and optional_version("pyod"):
        from pyod.models.vae import VAE

        out["PyOD VAE"] = (lambda: VAE(verbose=0, random_state=0), lambda m, X: m.decision_function(X))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9", help="normal digits to run, one task each")
    parser.add_argument("--no-pyod", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "image_networks.json"))
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    set_threads(args.threads)

    from vaeguard.digits import embedded_digits

    data = embedded_digits()
    digits = [int(d) for d in args.digits.split(",")]
    results = run_header("image_networks") | {"settings": vars(args), "methods": {}}
    for name, (build, score) in methods(not args.no_pyod).items():
        cells = results["methods"][name] = {"auroc": {}, "fit_s": {}}
        for digit in digits:
            X = data.X_train[data.y_train == digit]
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "too few rows" for ~90 training images
                model = build().fit(X)
            cells["fit_s"][digit] = time.perf_counter() - start
            cells["auroc"][digit] = float(roc_auc_score(data.y_test != digit, score(model, data.X_test)))
            log(f"{name}, digit {digit}: AUROC {cells['auroc'][digit]:.4f}, fit {cells['fit_s'][digit]:.1f} s")
        cells["mean_auroc"] = float(np.mean(list(cells["auroc"].values())))
        cells["median_fit_s"] = median(list(cells["fit_s"].values()))
    rows = [[name, *(fmt(c["auroc"][d]) for d in digits), fmt(c["mean_auroc"], 4), fmt(c["median_fit_s"])]
            for name, c in results["methods"].items()]
    text = (f"### Embedded 8x8 digits, one-class (normal = one digit, about 90 training images; test = the "
            f"{len(data.X_test):,}-image test half)\n\n"
            + markdown_table(["method", *map(str, digits), "mean AUROC", "median fit s"], rows) + "\n")
    publish(results, text, args.out, args.markdown)


if __name__ == "__main__":
    main()
