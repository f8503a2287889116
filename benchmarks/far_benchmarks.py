"""Far-from-home benchmark: inputs from another source, against vaeguard and peers in one run.

A detector is fitted once per training set and scored on its own unseen normals beside every
far set (issue #22):

- **fashion**: normal = the 8 Fashion-MNIST classes of `fashion-oneclass/`, each class's
  normals shuffled with seed 0 and the first 70% pooled for training (39,200 images), the other
  30% pooled as the test normals (16,800); foreign = the 10,000 MNIST test digits.
- **mnist**: normal = 20,000 MNIST training digits (drawn with seed 0), test normals = the
  10,000 MNIST test digits; foreign = the 16,800 Fashion-MNIST test normals above.

Beside the foreign set, four sets derived from (a seed-0 draw of `--derived` of) the training
set's own test normals, which no camera should produce: `noise` (uniform grey levels),
`constant` (one uniform grey level per image), `inverted` (1 - x) and `flipped` (upside down).

Per method and far set: AUROC (test normals against that set) and the recall at the method's
threshold: vaeguard's default calibrated threshold (1% conformal false-positive rate); for
kNN, PCA and IsolationForest a conformal 1% threshold of their own (fitted on 80% of the
training rows, threshold from the other 20%; the AUROC row is the fit on all of them).

`--scores` adds the diagnostic of benchmarks/score_types.py for vaeguard: one fitted network
(the default's), every score it gives, each with its own conformal threshold from the same
calibration rows.

Run from the repository root (see benchmarks/README.md):
    python benchmarks/far_benchmarks.py --threads 1 --scores
    python benchmarks/far_benchmarks.py --quick --threads 1 --out /tmp/far_quick.json
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _common import REPO_ROOT, check_positive, conformal_fit, fmt, log, markdown_table, publish, resolve_dir, run_header, select_methods, set_threads, write_json

from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

from mnist_protocols import DEFAULT_DATA_DIR as DEFAULT_MNIST_DIR
from oneclass_benchmarks import DATA_DIR_ENV, DEFAULT_DATA_DIR, FASHION_CLASSES, KNN_K, KNNDistance, PCAReconstruction, load_split
from vaeguard import VAEAnomalyDetector
from vaeguard.calibration import is_flagged
from vaeguard.mnist import MNIST_DIR_ENV, load_mnist

import far_scores

TRAININGS = ("fashion", "mnist")
FAR_SETS = ("foreign", "noise", "constant", "inverted", "flipped")
FOREIGN = {"fashion": "MNIST digits", "mnist": "Fashion-MNIST"}
MNIST_TRAIN = 20_000
DERIVED = 2_000
FPR = 0.01  # every threshold's target false-positive rate
PEER_CALIBRATION = 0.2  # share of the training rows that sets a peer's conformal threshold
PYOD_SETTINGS = {"verbose": 0, "random_state": 0}


@dataclass
class Method:
    """A detector: how to build it, how to score (higher = worse), and whether it gets a conformal
    threshold of its own (vaeguard has one built in)."""

    name: str
    build: Callable[[int | None], object]
    score: Callable[[object, np.ndarray], np.ndarray]
    conformal: bool = False


def _vaeguard(epochs: int | None) -> VAEAnomalyDetector:
    # declared images, as a folder of them is: flat rows without input_shape are a table
    return VAEAnomalyDetector(random_state=0, input_shape=(1, 28, 28), **({} if epochs is None else {"epochs": epochs}))


def all_methods(use_pyod: bool) -> list[Method]:
    """Every method in table order; the first is vaeguard's default."""
    methods = [
        Method("vaeguard default", _vaeguard, lambda est, X: est.anomaly_score(X)),
        Method(f"kNN distance (k={KNN_K})", lambda e: KNNDistance(), lambda est, X: est.anomaly_score(X), True),
        Method("PCA recon (90% var.)", lambda e: PCAReconstruction(), lambda est, X: est.anomaly_score(X), True),
        Method("IsolationForest", lambda e: IsolationForest(random_state=0), lambda est, X: -est.score_samples(X), True),
    ]
    if use_pyod:
        try:
            from pyod.models.vae import VAE as PyodVAE
        except Exception as exc:  # noqa: BLE001 - PyOD is optional; any import failure skips it
            log(f"PyOD not usable ({type(exc).__name__}: {exc}); skipping PyOD VAE")
        else:
            def build(epochs: int | None):
                return PyodVAE(**PYOD_SETTINGS, **({} if epochs is None else {"epoch_num": epochs}))

            methods.append(Method("PyOD VAE", build, lambda est, X: est.decision_function(X)))
    return methods


# ---------------------------------------------------------------------------- data


def fashion_split(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(training images, test normals) of the 8 classes pooled, by the one-class protocol, in [0, 1]."""
    train, test = [], []
    for c in FASHION_CLASSES:
        X_train, X_test, labels = load_split(data_dir, "fashion", str(c))
        train.append(X_train)
        test.append(X_test[labels == 0])
    return np.concatenate(train).astype(np.float32), np.concatenate(test).astype(np.float32)


def derived_sets(normals: np.ndarray, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Images no camera should produce, made from a seed-0 draw of n test normals (28x28 rows)."""
    rng = np.random.default_rng(seed)
    base = normals[rng.permutation(len(normals))[:n]]
    side = int(np.sqrt(normals.shape[1]))
    return {
        "noise": rng.random(base.shape, dtype=np.float32),
        "constant": np.repeat(rng.random((len(base), 1), dtype=np.float32), base.shape[1], axis=1),
        "inverted": 1.0 - base,
        "flipped": base.reshape(-1, side, side)[:, ::-1, :].reshape(len(base), -1).copy(),
    }


def load_training(name: str, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(training rows, test normals, far sets by name) for one training set, all in [0, 1]."""
    data_dir = resolve_dir(args.data_dir, DATA_DIR_ENV, DEFAULT_DATA_DIR)
    mnist_dir = resolve_dir(args.mnist_dir, MNIST_DIR_ENV, DEFAULT_MNIST_DIR)
    fashion_train, fashion_test = fashion_split(data_dir)
    mnist_test = load_mnist("test", data_dir=mnist_dir, download=False)[0]
    if name == "fashion":
        X_train, normals, foreign = fashion_train, fashion_test, mnist_test
    else:
        X_all = load_mnist("train", data_dir=mnist_dir, download=False)[0]
        X_train = X_all[np.sort(np.random.default_rng(0).choice(len(X_all), MNIST_TRAIN, replace=False))]
        normals, foreign = mnist_test, fashion_test
    rng = np.random.default_rng(1)
    if args.max_train is not None and len(X_train) > args.max_train:
        X_train = X_train[np.sort(rng.choice(len(X_train), args.max_train, replace=False))]
    if args.max_test is not None:
        normals = normals[np.sort(rng.choice(len(normals), min(args.max_test, len(normals)), replace=False))]
        foreign = foreign[np.sort(rng.choice(len(foreign), min(args.max_test, len(foreign)), replace=False))]
    far = {"foreign": foreign, **derived_sets(normals, min(args.derived, len(normals)))}
    return X_train.astype(np.float32), normals.astype(np.float32), far


# ---------------------------------------------------------------------------- running


def evaluate(normal_scores: np.ndarray, far_scores_by_set: dict[str, np.ndarray], threshold: float | None) -> dict:
    """AUROC of each far set against the test normals, and the share flagged at `threshold`."""
    out = {"per_set": {}}
    if threshold is not None:
        out["threshold"] = float(threshold)
        out["fpr_test_normals"] = float(is_flagged(normal_scores, threshold).mean())
    for name, scores in far_scores_by_set.items():
        labels = np.r_[np.zeros(len(normal_scores)), np.ones(len(scores))]
        both = np.nan_to_num(np.r_[normal_scores, scores], nan=np.inf, posinf=np.finfo(np.float64).max)
        cell = {"auroc": float(roc_auc_score(labels, both)), "n": len(scores)}
        if threshold is not None:
            cell["recall"] = float(is_flagged(scores, threshold).mean())
        out["per_set"][name] = cell
    return out


def run_method(method: Method, X_train: np.ndarray, normals: np.ndarray, far: dict, epochs: int | None) -> tuple[dict, object]:
    """Fit on all training rows (AUROC), plus the conformal fit for the threshold where it applies."""
    est = method.build(epochs)
    start = time.perf_counter()
    est.fit(X_train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    normal_scores = np.asarray(method.score(est, normals), dtype=np.float64)
    far_scores_by_set = {k: np.asarray(method.score(est, v), dtype=np.float64) for k, v in far.items()}
    score_s = time.perf_counter() - start
    threshold = est.threshold_ if isinstance(est, VAEAnomalyDetector) else None
    result = evaluate(normal_scores, far_scores_by_set, threshold)
    if method.conformal:
        cal_est, threshold = conformal_fit(lambda: method.build(epochs), method.score, X_train, FPR, PEER_CALIBRATION)
        conformal = evaluate(np.asarray(method.score(cal_est, normals), dtype=np.float64),
                             {k: np.asarray(method.score(cal_est, v), dtype=np.float64) for k, v in far.items()}, threshold)
        result["fpr_test_normals"], result["threshold"] = conformal["fpr_test_normals"], conformal["threshold"]
        for name, cell in conformal["per_set"].items():
            result["per_set"][name]["recall"] = cell["recall"]
    result.update(fit_s=fit_s, score_s=score_s)
    if isinstance(est, VAEAnomalyDetector):
        result["settings"] = {"score_type": est.score_type_, "likelihood": est.likelihood_,
                              "architecture": est.config_.architecture, "epochs_run": est.n_epochs_}
    return result, est


def table(training: str, out: dict) -> str:
    """One row per method: AUROC and recall at the threshold per far set, and the test-normal FPR."""
    header = ["method"] + [f"{s} AUROC / recall" for s in FAR_SETS] + ["FPR normals", "fit s"]
    rows = []
    for name, res in out["methods"].items():
        if "error" in res:
            rows.append([name, *["err"] * len(FAR_SETS), "", ""])
            continue
        cells = []
        for s in FAR_SETS:
            c = res["per_set"][s]
            cells.append(f"{c['auroc']:.4f} / {c['recall']:.3f}" if "recall" in c else f"{c['auroc']:.4f} / -")
        rows.append([name, *cells, fmt(res.get("fpr_test_normals"), 3), fmt(res["fit_s"])])
    best = {}
    for s in FAR_SETS:
        peers = [r["per_set"][s]["auroc"] for m, r in out["methods"].items() if not m.startswith("vaeguard") and "per_set" in r]
        ref = out["methods"].get("vaeguard default", {}).get("per_set", {}).get(s, {}).get("auroc")
        best[s] = f"{ref - max(peers):+.4f}" if peers and ref is not None else "-"
    rows.append(["vaeguard default − best peer (AUROC)", *best.values(), "", ""])
    split = out["split"]
    title = (f"### Trained on {training} ({split['n_train']:,} images), far = {FOREIGN[training]} "
             f"({split['n_foreign']:,}) and {split['n_derived']:,} derived images each; "
             f"{split['n_normals']:,} test normals")
    return title + "\n\n" + markdown_table(header, rows) + "\n"


def score_table(training: str, diag: dict) -> str:
    header = ["score"] + [f"{s} AUROC / recall" for s in FAR_SETS] + ["FPR normals"]
    rows = [[name, *(f"{r['per_set'][s]['auroc']:.4f} / {r['per_set'][s]['recall']:.3f}" for s in FAR_SETS),
             fmt(r["fpr_test_normals"], 3)] for name, r in diag.items()]
    return (f"### Trained on {training}: every score of the default's network, each at its own conformal "
            f"{FPR:.0%} threshold (the default's calibration rows)\n\n" + markdown_table(header, rows) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainings", default=",".join(TRAININGS), help="comma-separated: fashion,mnist (default: both)")
    parser.add_argument("--methods", default=None, help="method names to keep (case-insensitive substrings, e.g. 'default,knn')")
    parser.add_argument("--no-pyod", action="store_true", help="leave out PyOD's VAE even when PyOD is installed")
    parser.add_argument("--scores", action="store_true", help="also every score of the default's network (diagnostic)")
    parser.add_argument("--stats-dir", type=Path, default=None, help="with --scores: save the per-row statistics here (far_stats_TRAINING.npz)")
    parser.add_argument("--quick", action="store_true", help="smoke run: --max-train 2000 --max-test 1000 --derived 200 --epochs 2")
    parser.add_argument("--epochs", type=int, default=None, help="override every neural method's epochs (not the protocol)")
    parser.add_argument("--max-train", type=int, default=None, help="at most N training images (not the protocol)")
    parser.add_argument("--max-test", type=int, default=None, help="at most N test normals and N foreign images (not the protocol)")
    parser.add_argument("--derived", type=int, default=DERIVED, help=f"images per derived set (default {DERIVED})")
    parser.add_argument("--data-dir", default=None, help=f"folder holding fashion-oneclass/ (default: ${DATA_DIR_ENV}, else ../shared/data)")
    parser.add_argument("--mnist-dir", default=None, help=f"folder with the MNIST IDX files (default: ${MNIST_DIR_ENV}, else ../shared/data/mnist)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (also OMP/MKL_NUM_THREADS)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "far.json")
    parser.add_argument("--markdown", type=Path, default=None, help="also save the Markdown tables here")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_train, args.max_test = args.max_train or 2000, args.max_test or 1000
        args.epochs = args.epochs or 2
        args.derived = min(args.derived, 200)
    args.training_list = [t.strip() for t in args.trainings.split(",") if t.strip()]
    if not args.training_list or any(t not in TRAININGS for t in args.training_list):
        parser.error(f"--trainings: choose from {', '.join(TRAININGS)}")
    check_positive(parser, args, ("epochs", "max_train", "max_test", "derived", "threads"))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    methods = select_methods(all_methods(use_pyod=not args.no_pyod), args.methods)
    results = run_header("far_benchmarks")
    results["settings"] = {
        "trainings": args.training_list, "methods": [m.name for m in methods], "epochs_override": args.epochs,
        "max_train": args.max_train, "max_test": args.max_test, "derived": args.derived, "fpr": FPR,
        "peer_calibration_share": PEER_CALIBRATION, "mnist_train": MNIST_TRAIN, "knn_k": KNN_K, "pyod_settings": PYOD_SETTINGS,
        "standard_protocol": args.epochs is None and args.max_train is None and args.max_test is None,
    }
    results["trainings"] = {}
    texts = []
    for training in args.training_list:
        X_train, normals, far = load_training(training, args)
        out = results["trainings"][training] = {"split": {
            "n_train": len(X_train), "n_normals": len(normals), "n_foreign": len(far["foreign"]),
            "n_derived": len(far["noise"])}, "methods": {}}
        for method in methods:
            log(f"[{training}] {method.name}: fitting on {len(X_train):,} images")
            try:
                res, est = run_method(method, X_train, normals, far, args.epochs)
                log("    " + "  ".join(f"{s} {c['auroc']:.4f}/{c.get('recall', float('nan')):.3f}" for s, c in res["per_set"].items())
                    + f"  fit {res['fit_s']:.1f}s")
            except Exception as exc:  # noqa: BLE001 - one failing method must not end a long run
                res, est = {"error": f"{type(exc).__name__}: {exc}"}, None
                log(f"    FAILED: {res['error']}")
            out["methods"][method.name] = res
            if args.scores and method.name == "vaeguard default" and est is not None:
                start = time.perf_counter()
                stats = None if args.stats_dir is None else str(args.stats_dir / f"far_stats_{training}.npz")
                diag = far_scores.all_scores(est, X_train, normals, far, args.epochs, FPR, stats)
                out["scores"] = {name: evaluate(n, f, t) for name, (n, f, t) in diag.items()}
                log(f"    scores: {time.perf_counter() - start:.1f}s")
                for name, r in out["scores"].items():
                    log(f"    {name:>16}: " + "  ".join(f"{s} {c['auroc']:.4f}/{c['recall']:.3f}" for s, c in r["per_set"].items()))
            write_json(args.out, results)
        texts.append(table(training, out) + (score_table(training, out["scores"]) if "scores" in out else ""))
    notes = (f"Thresholds: vaeguard's default (conformal {FPR:.0%} on its calibration rows); kNN, PCA and IsolationForest "
             f"a conformal {FPR:.0%} threshold from a second fit on {1 - PEER_CALIBRATION:.0%} of the training images, "
             f"scored on the other {PEER_CALIBRATION:.0%}; PyOD VAE: none (-). 'FPR normals' is the share of the unseen "
             "test normals flagged at that threshold.\n")
    if not results["settings"]["standard_protocol"]:
        notes += f"NOT the protocol: epochs {args.epochs}, max train {args.max_train}, max test {args.max_test}.\n"
    publish(results, "\n".join(texts) + "\n" + notes, args.out, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
