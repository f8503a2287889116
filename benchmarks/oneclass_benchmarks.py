"""One-class benchmarks beyond MNIST: Fashion-MNIST classes and 14 tabular sets, all methods.

Protocol (the same for every method and data set, see ../shared/data/README.md): shuffle the
normal rows with `np.random.default_rng(0).permutation`, fit on the first 70%, score the other
30% plus every anomaly, report AUROC. Tables are standardised with the mean and standard
deviation of the training part; images are divided by 255. Every method sees the same data in
the same run, so AUROC and time ratios between methods are fair even on a busy machine.

Run from the repository root (see benchmarks/README.md):
    python benchmarks/oneclass_benchmarks.py --threads 1          # full run, both suites
    python benchmarks/oneclass_benchmarks.py --suites tabular --sets letter,vowels --methods default,knn
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from _common import REPO_ROOT, check_positive, conformal_fit, flagged_share, fmt, log, markdown_table, plain, publish, resolve_dir, run_header, select_methods, set_threads, summarise, write_json

from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors
from sklearn.svm import OneClassSVM

from vaeguard import VAEAnomalyDetector

# ---------------------------------------------------------------------------- what is compared
# vaeguard settings, as (table name, keyword arguments); {} means the package defaults as they
# are at run time. random_state=0 is added to every variant.
VAEGUARD_VARIANTS: list[tuple[str, dict]] = [
    ("vaeguard default", {}),
    ("vaeguard fast", {"architecture": "mlp", "epochs": 15}),  # the MLP also for grey-level images
]
KNN_K = 5
PCA_VARIANCE = 0.9  # components that explain 90% of the training variance (at most PCA_MAX)
PCA_MAX = 32
PYOD_SETTINGS: dict[str, dict] = {
    "PyOD VAE": {"verbose": 0, "random_state": 0},
    "PyOD AutoEncoder": {"verbose": 0, "random_state": 0},
    "PyOD ECOD": {},
}
SUITES = ("fashion", "tabular")
FASHION_CLASSES = (0, 1, 3, 4, 5, 7, 8, 9)
FASHION_NAMES = {0: "T-shirt", 1: "trouser", 3: "dress", 4: "coat", 5: "sandal", 7: "sneaker", 8: "bag", 9: "boot"}
TABULAR_SETS = (
    "cardio", "letter", "mammography", "musk", "optdigits", "page-blocks", "pendigits", "pima",
    "satellite", "satimage-2", "shuttle", "vertebral", "vowels", "wine",
)
DATA_DIR_ENV = "VAEGUARD_DATA_DIR"
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
TRAIN_SHARE = 0.7


@dataclass
class Method:
    """A detector to benchmark: how to build it and how to get anomaly scores (higher = worse)."""

    name: str
    build: Callable[[int | None, int], object]  # (epochs override, n_features) -> unfitted detector
    score: Callable[[object, np.ndarray], np.ndarray]
    describe: Callable[[object], dict] = field(default=lambda est: {})
    conformal: bool = False  # also a conformal 1% threshold of its own (a second fit on 80% of the rows)


def _params(est) -> dict:
    return {"params": {k: plain(v) for k, v in est.get_params().items()}}


def _vaeguard_method(name: str, params: dict) -> Method:
    def build(epochs: int | None, n_features: int) -> VAEAnomalyDetector:
        kwargs = {**params, "random_state": 0}
        if epochs is not None:
            kwargs["epochs"] = epochs
        return VAEAnomalyDetector(**kwargs)

    def describe(est: VAEAnomalyDetector) -> dict:
        info = _params(est)
        for attr in ("n_epochs_", "score_type_", "likelihood_"):
            if hasattr(est, attr):
                info[attr.rstrip("_")] = plain(getattr(est, attr))
        return info

    return Method(name, build, lambda est, X: est.anomaly_score(X), describe)


class KNNDistance:
    """Distance to the k-th nearest training row (Ramaswamy et al. 2000): the usual kNN detector."""

    def __init__(self, k: int = KNN_K):
        self.k = k

    def fit(self, X: np.ndarray) -> "KNNDistance":
        self.nn_ = NearestNeighbors(n_neighbors=self.k).fit(X)
        return self

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        return self.nn_.kneighbors(X)[0][:, -1]

    def get_params(self) -> dict:
        return {"k": self.k}


class PCAReconstruction:
    """Squared reconstruction error from the principal components that explain PCA_VARIANCE."""

    def fit(self, X: np.ndarray) -> "PCAReconstruction":
        full = PCA(n_components=min(PCA_MAX, *X.shape), random_state=0).fit(X)
        n = int(np.searchsorted(np.cumsum(full.explained_variance_ratio_), PCA_VARIANCE) + 1)
        self.n_components_ = min(n, full.n_components_)
        self.mean_, self.components_ = full.mean_, full.components_[: self.n_components_]
        return self

    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        centred = X - self.mean_
        residual = centred - (centred @ self.components_.T) @ self.components_
        return np.einsum("ij,ij->i", residual, residual)

    def get_params(self) -> dict:
        return {"variance": PCA_VARIANCE, "max_components": PCA_MAX}


def _sklearn_method(name: str, make: Callable[[], object]) -> Method:
    return Method(name, lambda epochs, d: make(), lambda est, X: -est.score_samples(X), _params)


def _pyod_methods() -> list[Method]:
    try:
        from pyod.models.auto_encoder import AutoEncoder
        from pyod.models.ecod import ECOD
        from pyod.models.vae import VAE as PyodVAE
    except Exception as exc:  # noqa: BLE001 - PyOD is optional; any import failure skips it
        log(f"PyOD not usable ({type(exc).__name__}: {exc}); skipping the PyOD methods")
        return []
    methods = []
    for name, cls in (("PyOD VAE", PyodVAE), ("PyOD AutoEncoder", AutoEncoder), ("PyOD ECOD", ECOD)):
        def build(epochs: int | None, n_features: int, cls=cls, name=name):
            kwargs = dict(PYOD_SETTINGS[name])
            if epochs is not None and name != "PyOD ECOD":
                kwargs["epoch_num"] = epochs
            return cls(**kwargs)

        methods.append(Method(name, build, lambda est, X: est.decision_function(X), _params))
    return methods


def all_methods(use_pyod: bool) -> list[Method]:
    """Every method in table order; the first one is the reference for time ratios."""
    methods = [_vaeguard_method(name, params) for name, params in VAEGUARD_VARIANTS]
    methods += [
        Method(f"kNN distance (k={KNN_K})", lambda e, d: KNNDistance(), lambda est, X: est.anomaly_score(X), _params, conformal=True),
        _sklearn_method("LOF (novelty)", lambda: LocalOutlierFactor(novelty=True)),
        _sklearn_method("IsolationForest", lambda: IsolationForest(random_state=0)),
        Method("PCA recon (90% var.)", lambda e, d: PCAReconstruction(), lambda est, X: est.anomaly_score(X),
               lambda est: {"params": est.get_params(), "n_components": getattr(est, "n_components_", None)}),
        _sklearn_method("OneClassSVM", lambda: OneClassSVM()),
    ]
    if use_pyod:
        methods += _pyod_methods()
    return methods


# ---------------------------------------------------------------------------- data


IMAGE_SHAPES = {"fashion": (1, 28, 28)}  # the suites whose rows are images


def data_file(data_dir: Path, suite: str, name: str) -> Path:
    if suite == "fashion":
        return data_dir / "fashion-oneclass" / f"fashion{name}.npz"
    return data_dir / "tabular" / f"{name}.npz"


def protocol_split(x: np.ndarray, y: np.ndarray, standardise: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training rows, test rows, test labels 1 = anomaly) by the protocol of the module docstring."""
    normal, anomalous = np.flatnonzero(y == 0), np.flatnonzero(y != 0)
    normal = normal[np.random.default_rng(0).permutation(len(normal))]
    n_train = int(TRAIN_SHARE * len(normal))
    train, test = normal[:n_train], np.concatenate([normal[n_train:], anomalous])
    labels = np.concatenate([np.zeros(len(normal) - n_train, int), np.ones(len(anomalous), int)])
    X = x.astype(np.float64)
    if standardise:
        mean, std = X[train].mean(axis=0), X[train].std(axis=0)
        X = (X - mean) / np.where(std > 0, std, 1.0)
    else:
        X = X / 255.0
    return X[train], X[test], labels


def load_split(data_dir: Path, suite: str, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    path = data_file(data_dir, suite, name)
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; pass --data-dir (or set ${DATA_DIR_ENV}) to the folder holding fashion-oneclass/ and tabular/")
    with np.load(path) as data:
        return protocol_split(data["x"], data["y"], standardise=suite == "tabular")


# ---------------------------------------------------------------------------- running


def run_cell(method: Method, X_train: np.ndarray, X_test: np.ndarray, labels: np.ndarray, epochs: int | None,
             image_shape: tuple[int, int, int] | None = None) -> dict:
    """Fit one method on one split and score the test set; times are wall seconds. vaeguard is
    told `image_shape` (it never guesses images from the column count)."""
    est = method.build(epochs, X_train.shape[1])
    if image_shape is not None and isinstance(est, VAEAnomalyDetector):
        est.set_params(input_shape=image_shape)
    start = time.perf_counter()
    est.fit(X_train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = np.asarray(method.score(est, X_test), dtype=np.float64)
    score_s = time.perf_counter() - start
    if not np.all(np.isfinite(scores)):
        raise RuntimeError(f"{np.sum(~np.isfinite(scores))} non-finite scores")
    cell = {"auroc": float(roc_auc_score(labels, scores)), "fit_s": fit_s, "score_s": score_s, "settings": method.describe(est)}
    if isinstance(est, VAEAnomalyDetector):
        cell["recall"] = flagged_share(scores[labels == 1], est.threshold_)  # at the default threshold
    elif method.conformal:
        cal_est, threshold = conformal_fit(lambda: method.build(epochs, X_train.shape[1]), method.score, X_train)
        cell["recall"] = flagged_share(method.score(cal_est, X_test[labels == 1]), threshold)
    if isinstance(est, VAEAnomalyDetector) and est.threshold_rule_.get("rule") == "fpr":
        # the conformal threshold's promise, checked on the unseen test normals
        flagged = est.predict(X_test[labels == 0]) == -1
        target, n_cal, n_test = est.threshold_rule_["fpr"], len(est.calibration_scores_), int(np.sum(labels == 0))
        cell["threshold_check"] = {
            "target_fpr": target, "measured_fpr": float(flagged.mean()), "n_calibration": n_cal, "n_test_normals": n_test,
            "sigma": float(np.sqrt(target * (1 - target) * (1 / n_cal + 1 / n_test))),
        }
    return cell


def threshold_lines(suite: str, names: list[str], methods_out: dict) -> str:
    """Per vaeguard method: the measured false-positive rate on test normals against the target."""
    lines = []
    for name, out in methods_out.items():
        checks = [(n, out["per_set"][n]["threshold_check"]) for n in names if "threshold_check" in out["per_set"].get(n, {})]
        if not checks:
            continue
        z = [(c["measured_fpr"] - c["target_fpr"]) / c["sigma"] for _, c in checks]
        worst = max(range(len(z)), key=lambda i: abs(z[i]))
        lines.append(
            f"{name}: false-positive rate on the unseen test normals at the {checks[0][1]['target_fpr']:.0%} conformal "
            f"threshold, per set: " + ", ".join(f"{n} {c['measured_fpr']:.4f}" for n, c in checks)
            + f"; largest deviation {z[worst]:+.1f} binomial sigma ({checks[worst][0]}); {sum(abs(v) <= 3 for v in z)} of {len(z)} within 3 sigma."
        )
    return "\n".join(lines) + ("\n" if lines else "")


def suite_table(suite: str, names: list[str], methods_out: dict, reference: str) -> str:
    """One row per method; a last row gives, per set, the reference's AUROC minus the best other method's."""
    label = {n: (f"{n} {FASHION_NAMES[int(n)]}" if suite == "fashion" else n) for n in names}
    header = ["method", *(label[n] for n in names), "mean AUROC", "mean recall @ threshold", "median fit s", f"fit × {reference}"]
    rows = []
    for name, out in methods_out.items():
        per = out["per_set"]
        cells = [f"{per[n]['auroc']:.3f}" if "auroc" in per.get(n, {}) else ("err" if n in per else "-") for n in names]
        s = out.get("summary", {})
        mean = s.get("mean_auroc")
        recalls = [per[n]["recall"] for n in names if "recall" in per.get(n, {})]
        recall = f"{np.mean(recalls):.3f}" if recalls else "-"
        rows.append([name, *cells, "-" if mean is None else f"{mean:.4f}", recall, fmt(s.get("median_fit_s")), fmt(s.get("median_fit_ratio_vs_reference"))])
    gaps = []
    for n in names:
        ref = methods_out.get(reference, {}).get("per_set", {}).get(n, {}).get("auroc")
        peers = [out["per_set"][n]["auroc"] for m, out in methods_out.items()
                 if not m.startswith("vaeguard") and "auroc" in out["per_set"].get(n, {})]
        gaps.append(f"{ref - max(peers):+.3f}" if ref is not None and peers else "-")
    means = [out["summary"]["mean_auroc"] for m, out in methods_out.items() if not m.startswith("vaeguard") and out.get("summary", {}).get("mean_auroc") is not None]
    ref_mean = methods_out.get(reference, {}).get("summary", {}).get("mean_auroc")
    if reference.startswith("vaeguard"):
        rows.append([f"{reference} − best peer", *gaps, f"{ref_mean - max(means):+.4f}" if ref_mean is not None and means else "-", "", "", ""])
    title = {
        "fashion": "Fashion-MNIST one-class (normal = one class, anomaly = 1,000 images of the others)",
        "tabular": "tabular anomaly sets (ODDS)",
    }[suite]
    return f"### {title}: AUROC\n\n" + markdown_table(header, rows) + "\n" + threshold_lines(suite, names, methods_out)


def _notes(settings: dict, machine: dict) -> str:
    gpu = machine["gpu"]["name"] if machine["gpu"] else "no GPU"
    lines = [
        f"Machine: {machine['usable_cpus']} usable CPUs, {machine['torch_threads']} torch threads, {gpu}; "
        f"torch {machine['versions']['torch']}, vaeguard {machine['versions']['vaeguard']}, "
        f"commit {machine.get('git_commit') or '?'}.",
        "Protocol: normals shuffled with seed 0, fit on the first 70%, test = the other 30% + every anomaly; "
        "tables standardised with training statistics, images / 255. Peers are their libraries' defaults "
        f"(kNN: distance to the {KNN_K}th neighbour; PCA: components explaining {PCA_VARIANCE:.0%} of the variance, at most {PCA_MAX}).",
        "Recall @ threshold: the share of the test anomalies flagged, mean over sets; vaeguard at its default "
        "threshold (conformal 1% false-positive rate), kNN at a conformal 1% threshold of its own (fitted on 80% "
        "of the training rows, threshold from the other 20%); '-': no threshold of its own.",
        f"Fit seconds: median over sets; 'fit × {settings['reference_method']}' is the median per-set ratio of fit "
        "times in the same run. 'best peer' = the best non-vaeguard method of the run on that set (or mean).",
    ]
    if not settings["standard_protocol"]:
        lines.append(f"NOT the standard setting: epochs override {settings['epochs_override']}, max train {settings['max_train']}.")
    return "\n".join(lines) + "\n"


def _list(value: str | None, default: tuple, what: str, parser: argparse.ArgumentParser) -> list[str]:
    if value is None:
        return [str(v) for v in default]
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in {str(d) for d in default}]
    if unknown or not items:
        parser.error(f"{what}: unknown {unknown}; choose from {', '.join(map(str, default))}")
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", default=",".join(SUITES), help="comma-separated: fashion,tabular (default: both)")
    parser.add_argument("--classes", default=None, help=f"Fashion-MNIST classes to run, e.g. 0,1,3 (default: all of {','.join(map(str, FASHION_CLASSES))})")
    parser.add_argument("--sets", default=None, help="tabular sets to run, e.g. letter,vowels (default: all 14)")
    parser.add_argument("--methods", default=None, help="comma-separated method names to keep (case-insensitive substrings, e.g. 'default,knn'); default: all")
    parser.add_argument("--no-pyod", action="store_true", help="leave out the PyOD methods even when PyOD is installed")
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs of every neural method (a quick look; not the published setting)")
    parser.add_argument("--max-train", type=int, default=None, help="keep at most N training rows (the first N of the shuffled normals); smoke tests only")
    parser.add_argument("--data-dir", default=None, help=f"folder holding fashion-oneclass/ and tabular/ (default: ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR})")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (also OMP/MKL_NUM_THREADS); default: torch's own choice")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "oneclass_benchmarks.json", help="JSON results file (default: benchmarks/results/oneclass_benchmarks.json)")
    parser.add_argument("--markdown", type=Path, default=None, help="also save the Markdown tables to this file")
    args = parser.parse_args(argv)
    args.suite_list = _list(args.suites, SUITES, "--suites", parser)
    args.names = {"fashion": _list(args.classes, FASHION_CLASSES, "--classes", parser),
                  "tabular": _list(args.sets, TABULAR_SETS, "--sets", parser)}
    check_positive(parser, args, ("epochs", "max_train", "threads"))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    methods = select_methods(all_methods(use_pyod=not args.no_pyod), args.methods)
    reference = methods[0].name
    data_dir = resolve_dir(args.data_dir, DATA_DIR_ENV, DEFAULT_DATA_DIR)

    # One tiny fit and score per method first, so one-time costs (imports, JIT, thread pools)
    # do not land in the first set's timings.
    X_warm = np.random.default_rng(0).normal(size=(200, 8))
    for method in methods:
        try:
            method.score(method.build(1, 8).fit(X_warm), X_warm)
        except Exception as exc:  # noqa: BLE001 - the real run will report it
            log(f"warm-up of {method.name} failed: {type(exc).__name__}: {exc}")

    results = run_header("oneclass_benchmarks")
    results["settings"] = {
        "data_dir": str(data_dir),
        "suites": args.suite_list,
        "sets": {s: args.names[s] for s in args.suite_list},
        "methods": [m.name for m in methods],
        "reference_method": reference,
        "epochs_override": args.epochs,
        "max_train": args.max_train,
        "train_share": TRAIN_SHARE,
        "vaeguard_variants": {name: params for name, params in VAEGUARD_VARIANTS},
        "knn_k": KNN_K,
        "pca_variance": PCA_VARIANCE,
        "pyod_settings": PYOD_SETTINGS,
        "standard_protocol": args.epochs is None and args.max_train is None,
    }
    results["suites"] = {}
    for suite in args.suite_list:
        methods_out = {m.name: {"per_set": {}} for m in methods}
        out = results["suites"][suite] = {"splits": {}, "methods": methods_out}
        for name in args.names[suite]:
            X_train, X_test, labels = load_split(data_dir, suite, name)
            if args.max_train is not None:
                X_train = X_train[: args.max_train]
            out["splits"][name] = {"n_train": len(X_train), "n_test": len(labels), "n_anomalies": int(labels.sum()), "n_features": X_train.shape[1]}
            for method in methods:
                log(f"[{suite} {name}] {method.name}: fitting on {len(X_train):,} rows")
                try:
                    cell = run_cell(method, X_train, X_test, labels, args.epochs, IMAGE_SHAPES.get(suite))
                    log(f"    AUROC {cell['auroc']:.4f}  fit {cell['fit_s']:.1f}s  score {cell['score_s']:.2f}s")
                except Exception as exc:  # noqa: BLE001 - one failing method must not end a long run
                    cell = {"error": f"{type(exc).__name__}: {exc}"}
                    log(f"    FAILED: {cell['error']}")
                methods_out[method.name]["per_set"][name] = cell
                summarise(methods_out, reference, "per_set", "n_sets")
                write_json(args.out, results)  # after every cell, so a long run keeps its progress

    tables = "\n".join(suite_table(s, args.names[s], results["suites"][s]["methods"], reference) for s in args.suite_list)
    publish(results, tables + "\n" + _notes(results["settings"], results["machine"]), args.out, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
