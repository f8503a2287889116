"""Train and score MNIST and Fashion-MNIST on a CUDA GPU, and check that CPU scoring agrees.

For each case (MNIST one-class digit 0 and Fashion-MNIST class 0 with the default estimator,
the MLP, and Fashion-MNIST class 0 with `architecture="conv"`), with `random_state=0`:
1. fit on `--device` (default cuda) and time it; score the test set there (samples/s, median
   of `--repeats`);
2. save the model, load it on the CPU, score the same test set there, and compare: the largest
   score difference relative to the spread of the scores (interquartile range) must be at most
   `--rtol` (default 1e-4), and the AUROC must agree to `--auroc-tol` (default 1e-3). GPU
   kernels sum in another order than the CPU's, so scores agree to float32 rounding, not bit
   for bit.
Exit status 1 when a check fails, 2 when CUDA is asked for and missing. On a machine without a
GPU, `--device cpu` runs the same steps (a smoke test of the script: the check is then trivial).

    python benchmarks/cuda_check.py --out benchmarks/results/cuda_check.json
    python benchmarks/cuda_check.py --device cpu --max-train 2000 --epochs 2 --out /tmp/cuda_smoke.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from _common import REPO_ROOT, finish, log, markdown_table, median, publish, resolve_dir, run_header


def _cases(data_dir: Path, max_train: int | None) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, dict]]:
    """name: (training images, test images, test labels, estimator parameters beyond the defaults)."""
    from vaeguard.mnist import load_mnist

    out = {}
    x_train, y_train = load_mnist("train", data_dir / "mnist", download=False)
    x_test, y_test = load_mnist("test", data_dir / "mnist", download=False)
    image = {"input_shape": (1, 28, 28)}
    out["mnist digit 0 (mlp)"] = (x_train[y_train == 0][:max_train], x_test, (y_test != 0).astype(int), image)
    fashion = np.load(data_dir / "fashion-oneclass" / "fashion0.npz")
    x, y = fashion["x"].astype(np.float32) / 255.0, fashion["y"]
    order = np.random.default_rng(0).permutation(np.flatnonzero(y == 0))
    n_train = int(0.7 * len(order))
    test = np.r_[order[n_train:], np.flatnonzero(y == 1)]
    fashion_case = (x[order[:n_train]][:max_train], x[test], y[test].astype(int))
    out["fashion class 0 (mlp)"] = (*fashion_case, image)
    out["fashion class 0 (conv)"] = (*fashion_case, image | {"architecture": "conv"})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data-dir", default=None, help="the shared data folder (default: $VAEGUARD_DATA_DIR or ../shared/data)")
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="override the default epochs (smoke tests only)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--auroc-tol", type=float, default=1e-3)
    parser.add_argument("--out", default="benchmarks/results/cuda_check.json")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()

    import torch

    from vaeguard import VAEAnomalyDetector, load

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA GPU here: run on a machine with one, or pass --device cpu for a smoke test", file=sys.stderr)
        return 2
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    data_dir = resolve_dir(args.data_dir, "VAEGUARD_DATA_DIR", REPO_ROOT.parent / "shared" / "data")
    results = run_header("cuda_check") | {"settings": vars(args), "cases": {}}
    rows, failed = [], False
    for name, (X_train, X_test, labels, case_params) in _cases(data_dir, args.max_train).items():
        params = dict(random_state=0, device=args.device, **case_params) | ({"epochs": args.epochs} if args.epochs else {})
        log(f"{name}: fitting on {len(X_train):,} images on {args.device}")
        start = time.perf_counter()
        detector = VAEAnomalyDetector(**params).fit(X_train)
        sync()
        fit_s = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            scores = detector.anomaly_score(X_test)
            sync()
            times.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as tmp:
            detector.save(Path(tmp) / "m.vgm")
            cpu_scores = load(Path(tmp) / "m.vgm", device="cpu").anomaly_score(X_test)
        spread = float(np.subtract(*np.percentile(cpu_scores, [75, 25])))
        rel_diff = float(np.max(np.abs(scores - cpu_scores)) / spread)
        auroc, auroc_cpu = roc_auc_score(labels, scores), roc_auc_score(labels, cpu_scores)
        ok = rel_diff <= args.rtol and abs(auroc - auroc_cpu) <= args.auroc_tol
        failed |= not ok
        results["cases"][name] = {
            "n_train": len(X_train), "n_test": len(X_test), "fit_s": fit_s, "score_s": times,
            "samples_per_s": len(X_test) / median(times), "auroc": auroc, "auroc_cpu_scoring": auroc_cpu,
            "max_score_diff_over_iqr": rel_diff, "epochs": detector.n_epochs_, "agrees": ok,
        }
        rows.append([name, args.device, f"{fit_s:.1f}", f"{len(X_test) / median(times):,.0f}", f"{auroc:.4f}", f"{auroc_cpu:.4f}", f"{rel_diff:.1e}", "yes" if ok else "NO"])
    table = markdown_table(["case", "device", "fit s", "scoring samples/s", "AUROC", "AUROC, CPU scoring", "max diff / IQR", "agrees"], rows)
    publish(finish(results), f"{table}\n\nTolerances: score difference / IQR <= {args.rtol:g}, AUROC within {args.auroc_tol:g}.", args.out, args.markdown)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
