"""Which input-complexity measure to subtract in the fused score of grey-level images (issue #22).

Reads the per-row statistics that the diagnostics save (reconstruction NLL and latent distance
of one fitted network per case), recomputes each image's complexity under several measures
from the raw images, and scores `fused` with the reconstruction part replaced by
"reconstruction NLL - complexity" (each part a robust z-score on the validation rows, as in
the package). No network is fitted here.

Measures: `zlib9` and `zlib1`, the zlib code length at levels 9 and 1 (Serra et al. used real
compressors); `code length`, the package's (vaeguard.complexity.ImageCodeLength: LOCO-I's
median edge predictor, residuals coded by a discretised Laplace, or the pixels stored raw where
that is shorter), and `code length, no raw fallback` the Laplace code alone; `log residuals`, the sum of
2 log(1 + |residual|) over the same residuals (no code length); `context code length`, a
Laplace whose scale follows each pixel's neighbourhood activity. `none` is the fused score as
it was.

Inputs (`--far-stats` from far_benchmarks.py, `--near-stats` from score_types.py):

    python benchmarks/far_benchmarks.py --trainings fashion --methods default --no-pyod \
        --max-train 8000 --max-test 3000 --derived 1000 --scores --stats-dir STATS --threads 1
    python benchmarks/score_types.py --cases fashion:0,fashion:1,...,fashion:9 --candidates \
        --stats-dir STATS --threads 1
    python benchmarks/complexity_measures.py --far-stats STATS/far_stats_fashion.npz \
        --far-args "--max-train 8000 --max-test 3000 --derived 1000" --near-stats STATS
"""

from __future__ import annotations

import argparse
import glob
import shlex
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from _common import log, publish, resolve_dir, run_header

import far_benchmarks
from far_scores import split_indices, zlib_nats
from oneclass_benchmarks import DATA_DIR_ENV, DEFAULT_DATA_DIR, load_split
from vaeguard import VAEAnomalyDetector
from vaeguard.calibration import conformal_threshold
from vaeguard.complexity import ImageCodeLength

SHAPE = (1, 28, 28)


def _coder() -> ImageCodeLength:
    return ImageCodeLength(SHAPE).fit(np.array([0.0, 1.0]))  # the 8-bit step


def _residuals(X: np.ndarray) -> np.ndarray:
    """The package's median-edge-detector residuals, in grey levels (n, H*W)."""
    return 255.0 * _coder().residuals(X)[:, 0].double().numpy()


def _log_residuals(X: np.ndarray) -> np.ndarray:
    return (2 * np.log1p(_residuals(X))).sum(axis=1)


def _context_code_length(X: np.ndarray) -> np.ndarray:
    """A Laplace per pixel whose scale follows the activity of its west, north and north-west
    neighbours (in grey levels), coding the same residuals."""
    x = np.clip(np.rint(np.asarray(X) * 255), 0, 255).reshape(len(X), SHAPE[1], SHAPE[2])
    padded = np.pad(x, ((0, 0), (1, 0), (1, 0)))
    west, north, nw = padded[:, 1:, :-1], padded[:, :-1, 1:], padded[:, :-1, :-1]
    scale = (0.5 + 0.5 * (np.abs(west - nw) + np.abs(north - nw))).reshape(len(X), -1)
    return (np.log(2 * scale) + _residuals(X) / scale).sum(axis=1)


def _code_length(X: np.ndarray) -> np.ndarray:
    return _coder().nats(np.asarray(X, np.float32))


def _laplace_code_length(X: np.ndarray) -> np.ndarray:
    """The package's code length without its raw fallback (as it was before it had one)."""
    scale = np.maximum(_residuals(X).mean(axis=1), 0.5)  # in grey levels: at least half a step
    return SHAPE[1] * SHAPE[2] * (1 + np.log(2 * scale))


MEASURES = {"none": lambda X: np.zeros(len(X)), "zlib9": zlib_nats, "zlib1": lambda X: zlib_nats(X, 1),
            "code length, no raw fallback": _laplace_code_length, "code length": _code_length,
            "log residuals": _log_residuals, "context code length": _context_code_length}


def fused(stats, raw: dict[str, np.ndarray], measure) -> dict[str, np.ndarray]:
    """Fused scores of every row group, the reconstruction part less `measure` of its images."""
    parts = {g: (stats[f"{g}/recon"] - measure(raw[g]), stats[f"{g}/latent distance"]) for g in raw}
    scales = [(np.median(v), np.subtract(*np.percentile(v, [75, 25]))) for v in parts["validation"]]
    return {g: 0.5 * sum((p - c) / s for p, (c, s) in zip(parts[g], scales)) for g in raw}


def far(stats_path: Path, far_args: str, data_dir: Path) -> dict:
    parser = argparse.ArgumentParser()
    for name in ("--max-train", "--max-test", "--derived"):
        parser.add_argument(name, type=int, default=None)
    args = parser.parse_args(shlex.split(far_args))
    args.derived = args.derived or far_benchmarks.DERIVED
    args.data_dir, args.mnist_dir = str(data_dir), str(data_dir / "mnist")
    X_train, normals, far_sets = far_benchmarks.load_training("fashion", args)
    cal, val = split_indices(VAEAnomalyDetector(random_state=0), len(X_train))
    raw = {"validation": X_train[val], "calibration": X_train[cal], "normals": normals, **far_sets}
    stats = np.load(stats_path)
    if not np.allclose(zlib_nats(raw["validation"][:50]), stats["validation/zlib"][:50]):
        raise SystemExit(f"{stats_path}: its rows are not the ones these --far-args give")
    out = {}
    for name, measure in MEASURES.items():
        scores = fused(stats, raw, measure)
        threshold = conformal_threshold(scores["calibration"], 0.01)
        out[name] = {"fpr_normals": float((scores["normals"] > threshold).mean())}
        for s in far_sets:
            labels = np.r_[np.zeros(len(normals)), np.ones(len(far_sets[s]))]
            out[name][s] = {"auroc": float(roc_auc_score(labels, np.r_[scores["normals"], scores[s]])),
                            "recall": float((scores[s] > threshold).mean())}
        log(f"far {name}: " + ", ".join(f"{s} {out[name][s]['auroc']:.4f}" for s in far_sets))
    return out


def near(stats_dir: Path, data_dir: Path) -> dict:
    out = {}
    for path in sorted(glob.glob(str(stats_dir / "stats_fashion_*_0.npz"))):
        cls = Path(path).stem.split("_")[2]
        X, X_test, labels = load_split(data_dir, "fashion", cls)
        _, val = split_indices(VAEAnomalyDetector(random_state=0), len(X))
        stats = {k.replace("test/", "normals/"): v for k, v in np.load(path).items()}
        raw = {"validation": X[val], "normals": X_test}
        out[cls] = {name: float(roc_auc_score(labels, fused(stats, raw, m)["normals"])) for name, m in MEASURES.items()}
        log(f"fashion {cls}: " + ", ".join(f"{k} {v:.4f}" for k, v in out[cls].items()))
    return out


def render(r: dict) -> str:
    lines = []
    if "far" in r:
        sets = [k for k in next(iter(r["far"].values())) if k != "fpr_normals"]
        lines += ["### Far from home (trained on Fashion-MNIST): AUROC / recall at the conformal 1% threshold", "",
                  "| measure | " + " | ".join(sets) + " | FPR normals |", "| :--- |" + " ---: |" * (len(sets) + 1)]
        for name, cells in r["far"].items():
            lines.append(f"| {name} | " + " | ".join(f"{cells[s]['auroc']:.4f} / {cells[s]['recall']:.3f}" for s in sets)
                         + f" | {cells['fpr_normals']:.4f} |")
        lines.append("")
    if "near" in r:
        classes = list(r["near"])
        lines += ["### Near (Fashion-MNIST one-class, seed 0): AUROC", "",
                  "| measure | " + " | ".join(classes) + " | mean |", "| :--- |" + " ---: |" * (len(classes) + 1)]
        for name in MEASURES:
            values = [r["near"][c][name] for c in classes]
            lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {np.mean(values):.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--far-stats", type=Path, help="far_stats_fashion.npz of far_benchmarks.py --scores --stats-dir")
    parser.add_argument("--far-args", default="", help="the --max-train/--max-test/--derived that run used")
    parser.add_argument("--near-stats", type=Path, help="the --stats-dir of score_types.py --candidates on fashion:C cases")
    parser.add_argument("--data-dir", default=None, help=f"folder holding fashion-oneclass/ and mnist/ (default: ${DATA_DIR_ENV})")
    parser.add_argument("--out", default="benchmarks/results/complexity_measures.json")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    data_dir = resolve_dir(args.data_dir, DATA_DIR_ENV, DEFAULT_DATA_DIR)
    results = run_header("complexity_measures")
    if args.far_stats:
        results["far"] = far(args.far_stats, args.far_args, data_dir)
    if args.near_stats:
        results["near"] = near(args.near_stats, data_dir)
    publish(results, render(results), args.out, args.markdown)


if __name__ == "__main__":
    main()
