"""Does a feature that barely varies in training take over the score? (issue #21)

Two cases, each scored clean and with the near-constant features added, with the default
detector (its default threshold, fpr=0.01):

- **images** (`dusty`): Fashion-MNIST one-class sets (../shared/data/fashion-oneclass, the
  one-class protocol of `oneclass_benchmarks.py`). In a share `--dust-rate` of all images,
  training, calibration and test alike, one pixel within 2 pixels of the border is set to a
  grey level in [0.05, 0.15]: a dust speck, a hot pixel. Each such pixel is blank in nearly every
  training image, so its spread is near 0.
- **table** (`flags`): 8 correlated Gaussian columns, anomalies off their 3-dimensional
  structure; the flagged version adds five 0/1 columns set in 1% of all rows (as
  tests/test_scaling.py).

The target: the near-constant features move AUROC by less than 0.01, and the recall at the
default threshold stays within 80% of the clean data's. `--shares` compares pixel floors
(vaeguard.scorer.PIXEL_FLOOR_SHARE; 0 switches it off).

    python benchmarks/near_constant.py --threads 1 --classes 0,4 --shares 0,0.1,0.3
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import roc_auc_score

from _common import REPO_ROOT, fmt, log, markdown_table, publish, resolve_dir, run_header, set_threads
from oneclass_benchmarks import FASHION_NAMES, load_split

SIDE = 28
BORDER = 2  # a dust speck lies within this many pixels of the edge


def add_dust(X: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """A copy of flat 28x28 images in which a share `rate` hold one speck near the border."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    edge = np.flatnonzero((np.minimum(yy, SIDE - 1 - yy) < BORDER) | (np.minimum(xx, SIDE - 1 - xx) < BORDER))
    out = X.copy()
    dusty = np.flatnonzero(rng.random(len(X)) < rate)
    out[dusty, rng.choice(edge, len(dusty))] = rng.uniform(0.05, 0.15, len(dusty))
    return out


def flag_table(flags: bool, seed: int = 0, n: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    W = np.random.default_rng(99).normal(size=(3, 8))

    def normal(m: int) -> np.ndarray:
        X = rng.normal(size=(m, 3)) @ W + 0.3 * rng.normal(size=(m, 8))
        return np.hstack([X, rng.random((m, 5)) < 0.01]) if flags else X

    train, test, anomalies = normal(n), normal(500), normal(50)
    anomalies[:, :8] = rng.normal(size=(50, 8)) * 1.5
    return train, np.vstack([test, anomalies]), np.r_[np.zeros(500), np.ones(50)]


def evaluate(train: np.ndarray, test: np.ndarray, labels: np.ndarray, **params) -> dict:
    from vaeguard import VAEAnomalyDetector

    detector = VAEAnomalyDetector(random_state=0, **params).fit(train)
    flagged = detector.predict(test) == -1
    return {
        "auroc": float(roc_auc_score(labels, detector.anomaly_score(test))),
        "recall": float(flagged[labels == 1].mean()),
        "fpr": float(flagged[labels == 0].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default="0,4", help="Fashion-MNIST classes (of 0,1,3,4,5,7,8,9)")
    parser.add_argument("--shares", default=None, help="pixel floors to compare (default: vaeguard's)")
    parser.add_argument("--dust-rate", type=float, default=0.03)
    parser.add_argument("--train-rows", type=int, default=3000, help="training normals per class (a subsample, for time)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="benchmarks/results/near_constant.json")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    import vaeguard.scorer as scorer

    data_dir = resolve_dir(args.data_dir, "VAEGUARD_DATA_DIR", REPO_ROOT.parent / "shared" / "data")
    shares = [float(s) for s in args.shares.split(",")] if args.shares else [scorer.PIXEL_FLOOR_SHARE]
    results = run_header("near_constant") | {"settings": vars(args), "cells": {}}
    rows = []

    def record(case: str, share, clean: dict, dirty: dict) -> None:
        results["cells"][f"{case} share={share}"] = {"clean": clean, "near_constant": dirty}
        ratio = dirty["recall"] / clean["recall"] if clean["recall"] else float("nan")
        rows.append([case, "-" if share is None else share, fmt(clean["auroc"], 4), fmt(dirty["auroc"], 4),
                     fmt(dirty["auroc"] - clean["auroc"], 4), fmt(clean["recall"]), fmt(dirty["recall"]), fmt(ratio, 2),
                     fmt(clean["fpr"]), fmt(dirty["fpr"])])
        log(" | ".join(str(v) for v in rows[-1]))

    for share in shares:
        scorer.PIXEL_FLOOR_SHARE = share if share > 0 else 1e-12
        for name in args.classes.split(","):
            train, test, labels = load_split(data_dir, "fashion", name)
            train = train[: args.train_rows]
            case = f"Fashion {name} {FASHION_NAMES[int(name)]}, dust"
            log(f"[{case}, share {share}] fitting clean and dusty")
            clean = evaluate(train, test, labels, input_shape=(1, SIDE, SIDE))
            dirty = evaluate(add_dust(train, args.dust_rate, 1), add_dust(test, args.dust_rate, 2), labels, input_shape=(1, SIDE, SIDE))
            record(case, share, clean, dirty)
    record("table, five 1% flags", None, evaluate(*flag_table(False)), evaluate(*flag_table(True)))

    header = ["case", "pixel floor share", "AUROC clean", "AUROC near-const.", "change", "recall clean",
              "recall near-const.", "recall ratio", "FPR clean", "FPR near-const."]
    text = "### Near-constant features (issue #21)\n\n" + markdown_table(header, rows) + (
        f"\n\nDefault detector, seed 0, its default threshold (fpr=0.01). Images: {args.train_rows} training normals "
        f"per class, one speck (grey 0.05-0.15, within {BORDER} px of the edge) in {args.dust_rate:.0%} of all images. "
        "Target: |change| < 0.01 and recall ratio >= 0.8.\n"
    )
    publish(results, text, args.out, args.markdown)


if __name__ == "__main__":
    main()
