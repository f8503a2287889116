"""One-class benchmarks beyond MNIST: Fashion-MNIST classes, 14 tabular sets, tables as users have them.

Protocol (the same for every method and data set, see ../shared/data/README.md): shuffle the
normal rows with `np.random.default_rng(0).permutation`, fit on the first 70%, score the other
30% plus every anomaly, report AUROC. Tables are standardised with the mean and standard
deviation of the training part; images are divided by 255. Every method sees the same data in
the same run, so AUROC and time ratios between methods are fair even on a busy machine.

Two suites of issue #21, not in the default run:
- `mixed`: the CSV files of ../shared/data/mixed/ (text and number columns). vaeguard trains and
  scores through the CLI on the raw rows, as a user would, with and without its text columns;
  the peers get what a scikit-learn user builds (one-hot text, standardised numbers).
- `missing`: the 14 tabular sets with a share of cells blanked (--rates); vaeguard gets the rows
  with NaN, the peers a median imputation from the training part.
In both, every peer also gets a conformal 1% threshold of its own (recall @ threshold).

Run from the repository root (see benchmarks/README.md):
    python benchmarks/oneclass_benchmarks.py --threads 1          # full run, fashion and tabular
    python benchmarks/oneclass_benchmarks.py --suites tabular --sets letter,vowels --methods default,knn
    python benchmarks/oneclass_benchmarks.py --suites mixed,missing --rates 0.1,0.3 --threads 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from _common import REPO_ROOT, check_positive, conformal_fit, flagged_share, fmt, log, markdown_table, plain, publish, resolve_dir, run_header, select_methods, set_threads, summarise, write_json

from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import OneClassSVM

from vaeguard import VAEAnomalyDetector

if TYPE_CHECKING:
    import pandas as pd

# ---------------------------------------------------------------------------- what is compared
# vaeguard settings, as (table name, keyword arguments); {} means the package defaults as they
# are at run time. random_state=0 is added to every variant.
VAEGUARD_VARIANTS: list[tuple[str, dict]] = [
    ("vaeguard default", {}),
    ("vaeguard fast", {"epochs": 15}),
]
# Run on image suites only: the convolutional network, the accurate and slow choice for grey levels.
IMAGE_VARIANTS: list[tuple[str, dict]] = [("vaeguard conv", {"architecture": "conv"})]
KNN_K = 5
PCA_VARIANCE = 0.9  # components that explain 90% of the training variance (at most PCA_MAX)
PCA_MAX = 32
PYOD_SETTINGS: dict[str, dict] = {
    "PyOD VAE": {"verbose": 0, "random_state": 0},
    "PyOD AutoEncoder": {"verbose": 0, "random_state": 0},
    "PyOD ECOD": {},
}
SUITES = ("fashion", "tabular", "mixed", "missing")
DEFAULT_SUITES = ("fashion", "tabular")
FASHION_CLASSES = (0, 1, 3, 4, 5, 7, 8, 9)
FASHION_NAMES = {0: "T-shirt", 1: "trouser", 3: "dress", 4: "coat", 5: "sandal", 7: "sneaker", 8: "bag", 9: "boot"}
TABULAR_SETS = (
    "cardio", "letter", "mammography", "musk", "optdigits", "page-blocks", "pendigits", "pima",
    "satellite", "satimage-2", "shuttle", "vertebral", "vowels", "wine",
)
# mixed/: the label column and its normal (majority) value, per file; the other value is the anomaly
MIXED_LABELS = {"adult": ("income", "<=50K"), "churn": ("Churn", "False")}
MIXED_SETS = tuple(MIXED_LABELS)
MISSING_RATES = (0.1, 0.3)
MISSING_SEED = 1
NEW_SUITES_SKIP = ("PyOD AutoEncoder",)  # peers left out of mixed and missing (not in issue #21's list)
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
    native_missing: bool = False  # missing suite: gets the rows with NaN (else a median imputation)


@dataclass
class CLIMethod:
    """vaeguard through `python -m vaeguard train` and `score` on CSV files (the mixed suite)."""

    name: str
    without_text: bool  # --exclude the text columns


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

    return Method(name, build, lambda est, X: est.anomaly_score(X), describe, native_missing=True)


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


CLI_METHODS = [CLIMethod("vaeguard default (CLI)", False), CLIMethod("vaeguard default (CLI), no text columns", True)]


def suite_methods(suite: str, use_pyod: bool) -> list:
    """The methods of one suite in table order; the first one is the reference. mixed: vaeguard
    through the CLI; mixed and missing leave out NEW_SUITES_SKIP."""
    methods = all_methods(use_pyod)
    if suite in IMAGE_SHAPES:
        methods[len(VAEGUARD_VARIANTS):len(VAEGUARD_VARIANTS)] = [_vaeguard_method(n, p) for n, p in IMAGE_VARIANTS]
    if suite not in ("mixed", "missing"):
        return methods
    methods = [m for m in methods if m.name not in NEW_SUITES_SKIP]
    if suite == "mixed":
        methods = CLI_METHODS + [m for m in methods if not m.name.startswith("vaeguard")]
    return methods


# ---------------------------------------------------------------------------- data


IMAGE_SHAPES = {"fashion": (1, 28, 28)}  # the suites whose rows are images


def data_file(data_dir: Path, suite: str, name: str) -> Path:
    if suite == "fashion":
        return data_dir / "fashion-oneclass" / f"fashion{name}.npz"
    return data_dir / "tabular" / f"{name}.npz"


def protocol_indices(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training row indices, test row indices, test labels 1 = anomaly) by the protocol of the
    module docstring: y != 0 marks the anomalies."""
    normal, anomalous = np.flatnonzero(y == 0), np.flatnonzero(y != 0)
    normal = normal[np.random.default_rng(0).permutation(len(normal))]
    n_train = int(TRAIN_SHARE * len(normal))
    train, test = normal[:n_train], np.concatenate([normal[n_train:], anomalous])
    labels = np.concatenate([np.zeros(len(normal) - n_train, int), np.ones(len(anomalous), int)])
    return train, test, labels


def protocol_split(x: np.ndarray, y: np.ndarray, standardise: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training rows, test rows, test labels 1 = anomaly) by the protocol of the module docstring."""
    train, test, labels = protocol_indices(y)
    X = x.astype(np.float64)
    if standardise:
        mean, std = X[train].mean(axis=0), X[train].std(axis=0)
        X = (X - mean) / np.where(std > 0, std, 1.0)
    else:
        X = X / 255.0
    return X[train], X[test], labels


def load_arrays(data_dir: Path, suite: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one fashion or tabular set, as stored."""
    path = data_file(data_dir, suite, name)
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; pass --data-dir (or set ${DATA_DIR_ENV}) to the folder holding fashion-oneclass/ and tabular/")
    with np.load(path) as data:
        return data["x"], data["y"]


def load_split(data_dir: Path, suite: str, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return protocol_split(*load_arrays(data_dir, suite, name), standardise=suite == "tabular")


def blank_cells(x: np.ndarray, rate: float, seed: int = MISSING_SEED) -> np.ndarray:
    """A float64 copy of x with the cells where `np.random.default_rng(seed).random(x.shape) < rate`
    set to NaN (../shared/data/README.md). A row that would lose every cell keeps the one whose
    draw was largest, so every row has at least one observed cell."""
    draws = np.random.default_rng(seed).random(x.shape)
    blank = draws < rate
    empty = np.flatnonzero(blank.all(axis=1))
    blank[empty, np.argmax(draws[empty], axis=1)] = False
    out = x.astype(np.float64)
    out[blank] = np.nan
    return out


def missing_split(x: np.ndarray, y: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tabular split with a share `rate` of cells blank, standardised with the training part's
    nan-mean and nan-std. The mask is drawn over the whole table in file order, so the split is
    the complete-data one and training and test rows lose cells alike."""
    train, test, labels = protocol_indices(y)
    X = blank_cells(x, rate)
    mean, std = np.nanmean(X[train], axis=0), np.nanstd(X[train], axis=0)
    X = (X - mean) / np.where(std > 0, std, 1.0)
    return X[train], X[test], labels


def median_impute(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both parts with each NaN replaced by its column's median over the training part."""
    median = np.nan_to_num(np.nanmedian(X_train, axis=0))
    return tuple(np.where(np.isnan(X), median, X) for X in (X_train, X_test))


@dataclass
class MixedSplit:
    """One mixed/ CSV file split by the protocol: the raw cells for the CLI, an encoding for the peers."""

    raw: pd.DataFrame  # every cell as the file spells it, the label column dropped
    text_columns: list[str]
    train: np.ndarray
    test: np.ndarray
    labels: np.ndarray
    X_train: np.ndarray  # peers: one-hot text (levels seen in training), standardised numbers
    X_test: np.ndarray


def load_mixed(data_dir: Path, name: str, max_train: int | None = None) -> MixedSplit:
    """Read mixed/NAME.csv; the rows whose label is the normal value are the normal class, and
    text columns are those pandas does not read as numbers (bool included). max_train keeps the
    first training rows only (smoke tests)."""
    import pandas as pd

    path = data_dir / "mixed" / f"{name}.csv"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; pass --data-dir (or set ${DATA_DIR_ENV}) to the folder holding mixed/")
    label, normal_value = MIXED_LABELS[name]
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    typed = pd.read_csv(path).drop(columns=[label])
    train, test, labels = protocol_indices((raw.pop(label) != normal_value).to_numpy())
    train = train[:max_train]
    text = [c for c in typed.columns if pd.api.types.is_bool_dtype(typed[c]) or not pd.api.types.is_numeric_dtype(typed[c])]
    numeric = [c for c in typed.columns if c not in text]
    encoder = ColumnTransformer([
        ("text", OneHotEncoder(handle_unknown="ignore", sparse_output=False), text),
        ("numbers", StandardScaler(), numeric),
    ]).fit(typed.iloc[train])
    return MixedSplit(raw, text, train, test, labels,
                      encoder.transform(typed.iloc[train]).astype(np.float64), encoder.transform(typed.iloc[test]).astype(np.float64))


# ---------------------------------------------------------------------------- running


def ranking(labels: np.ndarray, scores: np.ndarray) -> dict:
    """AUROC and AUPRC (average precision, anomaly = positive), and the share of rows with a finite
    score; a non-finite score ranks as the most anomalous (vaeguard.calibration.is_flagged flags it)."""
    finite = np.isfinite(scores)
    ranked = np.where(finite, scores, np.finfo(np.float64).max)
    return {"auroc": float(roc_auc_score(labels, ranked)), "auprc": float(average_precision_score(labels, ranked)),
            "finite_share": float(finite.mean())}


def run_cell(method: Method, X_train: np.ndarray, X_test: np.ndarray, labels: np.ndarray, epochs: int | None,
             image_shape: tuple[int, int, int] | None = None, new_suite: bool = False) -> dict:
    """Fit one method on one split and score the test set; times are wall seconds. vaeguard is
    told `image_shape` (it never guesses images from the column count). In the new suites
    (mixed, missing) every peer gets a conformal threshold, and non-finite scores are counted
    (`finite_share`) instead of failing the cell."""
    est = method.build(epochs, X_train.shape[1])
    if image_shape is not None and isinstance(est, VAEAnomalyDetector):
        est.set_params(input_shape=image_shape)
    start = time.perf_counter()
    est.fit(X_train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = np.asarray(method.score(est, X_test), dtype=np.float64)
    score_s = time.perf_counter() - start
    if not new_suite and not np.all(np.isfinite(scores)):
        raise RuntimeError(f"{np.sum(~np.isfinite(scores))} non-finite scores")
    cell = {**ranking(labels, scores), "fit_s": fit_s, "score_s": score_s, "settings": method.describe(est)}
    if isinstance(est, VAEAnomalyDetector):
        cell["recall"] = flagged_share(scores[labels == 1], est.threshold_)  # at the default threshold
    elif method.conformal or new_suite:
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


def write_mixed_csvs(split: MixedSplit, work: Path) -> tuple[Path, Path]:
    """train.csv (the training normals) and test.csv (the test rows, in label order), the raw
    cells without the label column: the files a user would hand to `vaeguard train` and `score`."""
    paths = work / "train.csv", work / "test.csv"
    for path, rows in zip(paths, (split.train, split.test)):
        split.raw.iloc[rows].to_csv(path, index=False)
    return paths


def _vaeguard_cli(args: list[str], threads: int | None) -> subprocess.CompletedProcess:
    """`python -m vaeguard -q ARGS` on this checkout; a failure raises with the last line it printed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)}
    command, *rest = args
    cmd = [sys.executable, "-m", "vaeguard", "-q", command, *rest, *([] if threads is None else ["--threads", str(threads)])]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(f"vaeguard {command} exit {done.returncode}: {lines[-1] if lines else ''}")
    return done


def run_cli_cell(method: CLIMethod, split: MixedSplit, train_csv: Path, test_csv: Path, epochs: int | None, threads: int | None) -> dict:
    """Train and score through the CLI (times: wall seconds of each command, start-up included).
    Recall and the test normals' false-positive rate come from the scores' `is_anomaly` column:
    the model's own threshold."""
    import pandas as pd

    model, scores_csv = train_csv.parent / "model.vgm", train_csv.parent / "scores.csv"
    options = (["--exclude", ",".join(split.text_columns)] if method.without_text else []) + ([] if epochs is None else ["--epochs", str(epochs)])
    start = time.perf_counter()
    trained = _vaeguard_cli(["train", str(train_csv), "-o", str(model), *options], threads)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    _vaeguard_cli(["score", str(model), str(test_csv), "-o", str(scores_csv)], threads)
    score_s = time.perf_counter() - start
    out = pd.read_csv(scores_csv)
    rows = out["row"].to_numpy() - 1  # 1-based data rows of test.csv
    scores, flagged = np.full(len(split.labels), np.nan), np.zeros(len(split.labels), bool)
    scores[rows] = pd.to_numeric(out["score"], errors="coerce").to_numpy()
    flagged[rows] = out["is_anomaly"].fillna(0).to_numpy() == 1
    info = _vaeguard_cli(["info", str(model)], None).stdout.splitlines()
    return {
        **ranking(split.labels, scores), "fit_s": fit_s, "score_s": score_s,
        "recall": float(flagged[split.labels == 1].mean()), "fpr_test_normals": float(flagged[split.labels == 0].mean()),
        "settings": {"train_options": options, "notes": [line for line in trained.stderr.splitlines() if line.startswith(("note:", "warning:"))],
                     "info": [line for line in info if line.startswith(("input", "architecture", "score", "threshold", "training"))]},
    }


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
    return (f"### {title}: AUROC\n\n" + markdown_table(header, rows) + "\n" + threshold_lines(suite, names, methods_out)
            + failure_lines(names, methods_out))


def _mean(cells: list[dict], key: str) -> str:
    values = [c[key] for c in cells if key in c]
    return f"{np.mean(values):.4f}" if values else "-"


def new_suite_table(title: str, names: list[str], methods_out: dict, reference: str, fields: tuple[str, ...]) -> str:
    """mixed and missing: one row per method with `fields` per set ('failed' where the method
    raised), the means, and rows for the reference's AUROC minus the best peer's and (mixed)
    vaeguard with its text columns minus without them."""
    field_names = {"auroc": "AUROC", "auprc": "AUPRC", "recall": "recall"}
    header = ["method", *(n if fields == ("auroc",) else f"{n} {' / '.join(field_names[f] for f in fields)}" for n in names),
              "mean AUROC", "mean AUPRC", "mean recall @ threshold", "median fit s"]
    rows = []
    for name, out in methods_out.items():
        per = out["per_set"]
        cells = ["-" if n not in per else "failed" if "error" in per[n] else " / ".join(f"{per[n][f]:.3f}" if f in per[n] else "-" for f in fields)
                 for n in names]
        done = [per[n] for n in names if "auroc" in per.get(n, {})]
        rows.append([name, *cells, _mean(done, "auroc"), _mean(done, "auprc"), _mean(done, "recall"), fmt(out.get("summary", {}).get("median_fit_s"))])

    def auroc(method: str, n: str) -> float | None:
        return methods_out.get(method, {}).get("per_set", {}).get(n, {}).get("auroc")

    def difference_row(label: str, first: str, second: Callable[[str], float | None]) -> list[str]:
        gaps = [(auroc(first, n), second(n)) for n in names]
        gaps = [a - b if a is not None and b is not None else None for a, b in gaps]
        done = [g for g in gaps if g is not None]
        mean = f"{np.mean(done):+.4f}" if len(done) == len(names) else "-"  # a mean over the same sets only
        return [label, *(f"{g:+.3f}" if g is not None else "-" for g in gaps), mean, "", "", ""]

    def best_peer(n: str) -> float | None:
        peers = [auroc(m, n) for m in methods_out if not m.startswith("vaeguard") and auroc(m, n) is not None]
        return max(peers) if peers else None

    rows.append(difference_row(f"{reference} − best peer (AUROC)", reference, best_peer))
    with_text, without_text = (m.name for m in CLI_METHODS)
    if with_text in methods_out and without_text in methods_out:
        rows.append(difference_row("vaeguard: with − without text columns (AUROC)", with_text, lambda n: auroc(without_text, n)))
    return f"### {title}\n\n" + markdown_table(header, rows) + "\n" + failure_lines(names, methods_out)


def failure_lines(names: list[str], methods_out: dict) -> str:
    """Per method that failed somewhere: on which sets, and the first set's one-line reason (every
    set's reason is in the JSON)."""
    lines = []
    for name, out in methods_out.items():
        failed = [n for n in names if "error" in out["per_set"].get(n, {})]
        if failed:
            others = len({out["per_set"][n]["error"] for n in failed}) - 1
            lines.append(f"{name} failed on {len(failed)} of {len(names)} sets ({', '.join(failed)}); on {failed[0]}: "
                         f"{out['per_set'][failed[0]]['error']}" + (f" ({others} other messages in the JSON)" if others else ""))
    return "\n".join(lines) + ("\n" if lines else "")


def finite_table(names: list[str], methods_out: dict) -> str:
    """missing: per vaeguard method and set, the share of test rows that got a finite score (the
    peers score imputed rows, always finite)."""
    rows = [[name, *("-" if n not in out["per_set"] else "failed" if "error" in out["per_set"][n] else f"{out['per_set'][n]['finite_share']:.3f}"
                     for n in names)] for name, out in methods_out.items() if name.startswith("vaeguard")]
    return "\nShare of test rows with a finite score:\n\n" + markdown_table(["method", *names], rows) + "\n" if rows else ""


def _notes(settings: dict, machine: dict) -> str:
    gpu = machine["gpu"]["name"] if machine["gpu"] else "no GPU"
    lines = [
        f"Machine: {machine['usable_cpus']} usable CPUs, {machine['torch_threads']} torch threads, {gpu}; "
        f"torch {machine['versions']['torch']}, vaeguard {machine['versions']['vaeguard']}, "
        f"commit {machine.get('git_commit') or '?'}."]
    if {"fashion", "tabular"} & set(settings["suites"]):
        lines += [
            "Protocol: normals shuffled with seed 0, fit on the first 70%, test = the other 30% + every anomaly; "
            "tables standardised with training statistics, images / 255. Peers are their libraries' defaults "
            f"(kNN: distance to the {KNN_K}th neighbour; PCA: components explaining {PCA_VARIANCE:.0%} of the variance, at most {PCA_MAX}).",
            "Recall @ threshold: the share of the test anomalies flagged, mean over sets; vaeguard at its default "
            "threshold (conformal 1% false-positive rate), kNN at a conformal 1% threshold of its own (fitted on 80% "
            "of the training rows, threshold from the other 20%); '-': no threshold of its own.",
            f"Fit seconds: median over sets; 'fit × {settings['reference_method']}' is the median per-set ratio of fit "
            "times in the same run. 'best peer' = the best non-vaeguard method of the run on that set (or mean).",
        ]
    if "mixed" in settings["suites"]:
        lines.append(
            "mixed: vaeguard trains and scores through the CLI (`python -m vaeguard train train.csv -o model.vgm`, "
            "`score model.vgm test.csv -o scores.csv`) on the raw rows without the label column, with its defaults; "
            "'no text columns' adds `--exclude` with the text columns. Its times are each command's wall seconds, "
            "start-up included. Peers: text columns one-hot encoded (levels seen in training, unknown levels "
            "ignored), numbers standardised with the training statistics.")
    if "missing" in settings["suites"]:
        lines.append(
            f"missing: cells blanked where np.random.default_rng({MISSING_SEED}).random(x.shape) < p over the whole "
            "table (a row keeps at least one cell), standardised with the training part's nan-mean and nan-std; "
            "vaeguard gets the rows with NaN, the peers a median imputation from the training part.")
    if {"mixed", "missing"} & set(settings["suites"]):
        lines.append(
            "mixed and missing: normals shuffled with seed 0, fit on the first 70%, test = the other 30% + every anomaly; "
            "AUPRC = average precision, anomaly = positive; recall @ threshold for every peer at a "
            "conformal 1% threshold of its own (fitted on 80% of the training rows, threshold from the other 20%), for "
            "vaeguard at its default threshold; a non-finite score ranks as the most anomalous; 'failed': the method "
            "raised (reason below the table). 'best peer' = the best non-vaeguard method of the run on that set.")
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


def _rates(value: str | None, parser: argparse.ArgumentParser) -> list[float]:
    if value is None:
        return list(MISSING_RATES)
    try:
        rates = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--rates: expected comma-separated numbers, got {value!r}")
    if not rates or any(not 0 <= r < 1 for r in rates):
        parser.error(f"--rates: each share must be in [0, 1), got {value!r}")
    return rates


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", default=",".join(DEFAULT_SUITES),
                        help=f"comma-separated: {','.join(SUITES)} (default: {','.join(DEFAULT_SUITES)})")
    parser.add_argument("--classes", default=None, help=f"Fashion-MNIST classes to run, e.g. 0,1,3 (default: all of {','.join(map(str, FASHION_CLASSES))})")
    parser.add_argument("--sets", default=None, help="tabular (and missing) sets to run, e.g. letter,vowels (default: all 14)")
    parser.add_argument("--mixed-sets", default=None, help=f"mixed sets to run (default: {','.join(MIXED_SETS)})")
    parser.add_argument("--rates", default=None,
                        help=f"missing: shares of cells to blank, e.g. 0.1,0.3 (default: {','.join(map(str, MISSING_RATES))}; 0 = complete data)")
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
    tables = _list(args.sets, TABULAR_SETS, "--sets", parser)
    args.names = {"fashion": _list(args.classes, FASHION_CLASSES, "--classes", parser), "tabular": tables,
                  "mixed": _list(args.mixed_sets, MIXED_SETS, "--mixed-sets", parser), "missing": tables}
    args.rate_list = _rates(args.rates, parser)
    check_positive(parser, args, ("epochs", "max_train", "threads"))
    return args


def one_line(exc: BaseException) -> str:
    """The exception's type and the first line of its message: the reason a cell failed."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def run_sets(out: dict, methods: list, reference: str, names: list[str], prepare: Callable, results: dict, path: Path) -> None:
    """Every method on every set: prepare(name) gives (the split's description, run(method) -> cell).
    A method that raises gets {"error": one line} and the run goes on; the JSON is rewritten after
    every cell, so a long run keeps its progress."""
    for name in names:
        out["splits"][name], run = prepare(name)
        for method in methods:
            log(f"[{out['label']} {name}] {method.name}: fitting on {out['splits'][name]['n_train']:,} rows")
            try:
                cell = run(method)
                log(f"    AUROC {cell['auroc']:.4f}  fit {cell['fit_s']:.1f}s  score {cell['score_s']:.2f}s")
            except Exception as exc:  # noqa: BLE001 - one failing method must not end a long run
                cell = {"error": one_line(exc)}
                log(f"    FAILED: {cell['error']}")
            out["methods"][method.name]["per_set"][name] = cell
            summarise(out["methods"], reference, "per_set", "n_sets")
            write_json(path, results)


def _describe(X_train: np.ndarray, labels: np.ndarray) -> dict:
    return {"n_train": len(X_train), "n_test": len(labels), "n_anomalies": int(labels.sum()), "n_features": X_train.shape[1]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    methods_by_suite = {s: select_methods(suite_methods(s, use_pyod=not args.no_pyod), args.methods) for s in args.suite_list}
    every_method = list({m.name: m for ms in methods_by_suite.values() for m in ms}.values())
    data_dir = resolve_dir(args.data_dir, DATA_DIR_ENV, DEFAULT_DATA_DIR)

    # One tiny fit and score per method first, so one-time costs (imports, JIT, thread pools)
    # do not land in the first set's timings.
    X_warm = np.random.default_rng(0).normal(size=(200, 8))
    for method in every_method:
        if isinstance(method, CLIMethod):
            continue
        try:
            method.score(method.build(1, 8).fit(X_warm), X_warm)
        except Exception as exc:  # noqa: BLE001 - the real run will report it
            log(f"warm-up of {method.name} failed: {type(exc).__name__}: {exc}")

    results = run_header("oneclass_benchmarks")
    results["settings"] = {
        "data_dir": str(data_dir),
        "suites": args.suite_list,
        "sets": {s: args.names[s] for s in args.suite_list},
        "methods": [m.name for m in every_method],
        "reference_method": methods_by_suite[args.suite_list[0]][0].name,
        "epochs_override": args.epochs,
        "max_train": args.max_train,
        "train_share": TRAIN_SHARE,
        "vaeguard_variants": {name: params for name, params in VAEGUARD_VARIANTS},
        "knn_k": KNN_K,
        "pca_variance": PCA_VARIANCE,
        "pyod_settings": PYOD_SETTINGS,
        "standard_protocol": args.epochs is None and args.max_train is None,
    }
    if "missing" in args.suite_list:
        results["settings"].update(missing_rates=args.rate_list, missing_seed=MISSING_SEED)
    results["suites"] = {}

    def block(label: str, methods: list) -> dict:
        return {"label": label, "reference_method": methods[0].name, "splits": {}, "methods": {m.name: {"per_set": {}} for m in methods}}

    def trimmed(X: np.ndarray) -> np.ndarray:
        return X if args.max_train is None else X[: args.max_train]

    with tempfile.TemporaryDirectory(prefix="vaeguard-oneclass-") as work:
        for suite in args.suite_list:
            methods = methods_by_suite[suite]
            if suite in ("fashion", "tabular"):
                def prepare(name: str, suite: str = suite):
                    X_train, X_test, labels = load_split(data_dir, suite, name)
                    X_train = trimmed(X_train)
                    return _describe(X_train, labels), lambda m: run_cell(m, X_train, X_test, labels, args.epochs, IMAGE_SHAPES.get(suite))

                out = results["suites"][suite] = block(suite, methods)
                run_sets(out, methods, out["reference_method"], args.names[suite], prepare, results, args.out)
            elif suite == "mixed":
                def prepare(name: str):
                    split = load_mixed(data_dir, name, args.max_train)
                    set_dir = Path(work) / name
                    set_dir.mkdir()
                    train_csv, test_csv = write_mixed_csvs(split, set_dir)

                    def run(m):
                        if isinstance(m, CLIMethod):
                            return run_cli_cell(m, split, train_csv, test_csv, args.epochs, args.threads)
                        return run_cell(m, split.X_train, split.X_test, split.labels, args.epochs, new_suite=True)

                    return {**_describe(split.X_train, split.labels), "n_features": split.raw.shape[1],
                            "n_peer_features": split.X_train.shape[1], "text_columns": split.text_columns}, run

                out = results["suites"][suite] = block(suite, methods)
                run_sets(out, methods, out["reference_method"], args.names[suite], prepare, results, args.out)
            else:
                results["suites"][suite] = {"rates": {}}
                for rate in args.rate_list:
                    def prepare(name: str, rate: float = rate):
                        x, y = load_arrays(data_dir, "tabular", name)
                        X_train, X_test, labels = missing_split(x, y, rate)
                        X_train = trimmed(X_train)
                        imputed = median_impute(X_train, X_test)
                        info = {**_describe(X_train, labels), "blank_share_train": float(np.isnan(X_train).mean()),
                                "blank_share_test": float(np.isnan(X_test).mean())}
                        return info, lambda m: run_cell(m, *((X_train, X_test) if m.native_missing else imputed), labels, args.epochs, new_suite=True)

                    out = results["suites"][suite]["rates"][f"{rate:g}"] = block(f"missing p={rate:g}", methods)
                    run_sets(out, methods, out["reference_method"], args.names[suite], prepare, results, args.out)

    texts = []
    for suite in args.suite_list:
        res, names = results["suites"][suite], args.names[suite]
        if suite in ("fashion", "tabular"):
            texts.append(suite_table(suite, names, res["methods"], res["reference_method"]))
        elif suite == "mixed":
            texts.append(new_suite_table("tables with text columns (mixed/; anomaly = the minority class)", names,
                                         res["methods"], res["reference_method"], ("auroc", "auprc", "recall")))
        else:
            for key, rate_out in res["rates"].items():
                texts.append(new_suite_table(f"tabular sets (ODDS) with {float(key):.0%} of cells blank: AUROC", names,
                                             rate_out["methods"], rate_out["reference_method"], ("auroc",))
                             + finite_table(names, rate_out["methods"]))
    publish(results, "\n".join(texts) + "\n" + _notes(results["settings"], results["machine"]), args.out, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
