"""MNIST anomaly-detection benchmark: the one-class and held-out-class protocols, all methods.

one-class: normal = the train images of one digit; test = all 10,000 test images, anomaly =
every other digit. held-out: normal = the train images of the nine other digits; anomaly = the
held-out digit. Every method sees the same data in the same run, so AUROC and time ratios
between methods are fair even on a busy machine.

Run from the repository root (see benchmarks/README.md):
    python benchmarks/mnist_protocols.py                      # full run, all digits
    python benchmarks/mnist_protocols.py --digits 0,3 --max-train 1000 --epochs 1   # quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from _common import REPO_ROOT, check_positive, flagged_share, fmt, log, markdown_table, median, plain, publish, resolve_dir, run_header, select_methods, set_threads, summarise, write_json, write_text

from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

from vaeguard import DataError, VAEAnomalyDetector
from vaeguard.mnist import MNIST_DIR_ENV, load_mnist, parse_digits

# ---------------------------------------------------------------------------- what is compared
# vaeguard settings to compare, as (table name, keyword arguments). An empty dict means the
# package defaults as they are at run time; random_state=0 is added to every variant.
VAEGUARD_VARIANTS: list[tuple[str, dict]] = [
    ("vaeguard default", {}),
    ("vaeguard fast", {"epochs": 15}),
]
PCA_COMPONENTS = 32
# PyOD detectors: keyword arguments on top of PyOD's defaults (epoch_num is left at PyOD's
# default, 30 for VAE and 10 for AutoEncoder, which is modest enough).
PYOD_SETTINGS: dict[str, dict] = {
    "PyOD VAE": {"verbose": 0, "random_state": 0},
    "PyOD AutoEncoder": {"verbose": 0, "random_state": 0},
}
PROTOCOLS = ("one-class", "held-out")
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "mnist"


@dataclass
class Method:
    """A detector to benchmark: how to build it and how to get anomaly scores (higher = worse)."""

    name: str
    build: Callable[[int | None], object]  # epochs override (None: keep) -> unfitted detector
    score: Callable[[object, np.ndarray], np.ndarray]
    describe: Callable[[object], dict] = field(default=lambda est: {})


def _vaeguard_method(name: str, params: dict) -> Method:
    def build(epochs: int | None) -> VAEAnomalyDetector:
        kwargs = {"input_shape": (1, 28, 28), **params, "random_state": 0}  # images are declared, never guessed
        if epochs is not None:
            kwargs["epochs"] = epochs
        return VAEAnomalyDetector(**kwargs)

    def describe(est: VAEAnomalyDetector) -> dict:
        info = {"params": {k: plain(v) for k, v in est.get_params().items()}}
        if hasattr(est, "n_epochs_"):
            info["epochs_run"] = est.n_epochs_
        return info

    return Method(name, build, lambda est, X: est.anomaly_score(X), describe)


def _pca_score(pca: PCA, X: np.ndarray) -> np.ndarray:
    residual = X - pca.inverse_transform(pca.transform(X))
    return np.einsum("ij,ij->i", residual, residual)


def _pyod_methods() -> list[Method]:
    try:
        from pyod.models.auto_encoder import AutoEncoder
        from pyod.models.vae import VAE as PyodVAE
    except Exception as exc:  # noqa: BLE001 - PyOD is optional; any import failure skips it
        log(f"PyOD not usable ({type(exc).__name__}: {exc}); skipping the PyOD methods")
        return []
    methods = []
    for name, cls in (("PyOD VAE", PyodVAE), ("PyOD AutoEncoder", AutoEncoder)):
        def build(epochs: int | None, cls=cls, name=name):
            kwargs = dict(PYOD_SETTINGS[name])
            if epochs is not None:
                kwargs["epoch_num"] = epochs
            return cls(**kwargs)

        methods.append(
            Method(
                name,
                build,
                lambda est, X: est.decision_function(X),
                lambda est: {"params": {k: plain(v) for k, v in est.get_params().items()}},
            )
        )
    return methods


def all_methods(use_pyod: bool) -> list[Method]:
    """Every method in table order; the first one is the reference for time ratios."""
    methods = [_vaeguard_method(name, params) for name, params in VAEGUARD_VARIANTS]
    methods.append(
        Method(
            f"PCA recon ({PCA_COMPONENTS} comps)",
            lambda epochs: PCA(n_components=PCA_COMPONENTS, random_state=0),
            _pca_score,
            lambda est: {"params": est.get_params()},
        )
    )
    methods.append(
        Method(
            "IsolationForest",
            lambda epochs: IsolationForest(random_state=0),
            lambda est, X: -est.score_samples(X),
            lambda est: {"params": est.get_params()},
        )
    )
    if use_pyod:
        methods += _pyod_methods()
    return methods


# ---------------------------------------------------------------------------- data


def protocol_split(
    protocol: str, digit: int, y_train: np.ndarray, y_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(train row mask, test anomaly labels 0/1) for one protocol and digit."""
    if protocol == "one-class":
        return y_train == digit, (y_test != digit).astype(int)
    return y_train != digit, (y_test == digit).astype(int)


def subsample(index: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """At most `limit` of the indices, drawn without replacement and kept in order."""
    if limit is None or len(index) <= limit:
        return index
    return np.sort(np.random.default_rng(seed).choice(index, size=limit, replace=False))


# ---------------------------------------------------------------------------- running


def run_cell(method: Method, X_train: np.ndarray, X_test: np.ndarray, labels: np.ndarray,
             epochs: int | None, score_repeats: int) -> dict:
    """Fit one method on one split and score the test set; times are wall seconds."""
    est = method.build(epochs)
    start = time.perf_counter()
    est.fit(X_train)
    fit_s = time.perf_counter() - start
    score_times, scores = [], None
    for _ in range(score_repeats):
        start = time.perf_counter()
        scores = np.asarray(method.score(est, X_test), dtype=np.float64)
        score_times.append(time.perf_counter() - start)
    if not np.all(np.isfinite(scores)):
        raise RuntimeError(f"{np.sum(~np.isfinite(scores))} non-finite scores")
    cell = {
        "auroc": float(roc_auc_score(labels, scores)),
        "fit_s": fit_s,
        "score_s": median(score_times),
        "score_s_repeats": score_times,
        "settings": method.describe(est),
    }
    if isinstance(est, VAEAnomalyDetector):
        cell["recall"] = flagged_share(scores[labels == 1], est.threshold_)  # at the default threshold
    return cell


def protocol_table(protocol: str, digits: list[int], methods_out: dict, reference: str) -> str:
    header = ["method", *map(str, digits), "mean AUROC", "mean recall @ threshold", "median fit s", "median score s", f"fit × {reference}"]
    rows = []
    for name, out in methods_out.items():
        per = out["per_digit"]
        cells = [f"{per[str(d)]['auroc']:.4f}" if "auroc" in per.get(str(d), {}) else ("err" if str(d) in per else "-") for d in digits]
        s = out.get("summary", {})
        mean = s.get("mean_auroc")
        recalls = [per[str(d)]["recall"] for d in digits if "recall" in per.get(str(d), {})]
        rows.append([
            name, *cells, "-" if mean is None else f"{mean:.4f}", f"{np.mean(recalls):.3f}" if recalls else "-", fmt(s.get("median_fit_s")),
            fmt(s.get("median_score_s")), fmt(s.get("median_fit_ratio_vs_reference")),
        ])
    title = {
        "one-class": "one-class (normal = one digit, anomaly = the other nine)",
        "held-out": "held-out class (normal = nine digits, anomaly = the held-out one)",
    }[protocol]
    return f"### MNIST {title}: AUROC per digit\n\n" + markdown_table(header, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", default="0-9", help="digits to run, e.g. 0,3,7 or 0-9 (default: all)")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated: one-class,held-out (default: both)")
    parser.add_argument("--methods", default=None, help="comma-separated method names to keep (case-insensitive substrings, e.g. 'fast,pca'); default: all")
    parser.add_argument("--no-pyod", action="store_true", help="leave out the PyOD methods even when PyOD is installed")
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs of every neural method (a quick look; not the published setting)")
    parser.add_argument("--max-train", type=int, default=None, help="subsample each training set to at most N images (seed 0)")
    parser.add_argument("--max-test", type=int, default=None, help="subsample the 10,000 test images to N (seed 0); smoke tests only, not the protocol")
    parser.add_argument("--score-repeats", type=int, default=3, help="times each method scores the test set; the median time is reported (default 3)")
    parser.add_argument("--data-dir", default=None, help=f"folder with the MNIST IDX files (default: ${MNIST_DIR_ENV}, else {DEFAULT_DATA_DIR})")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (also OMP/MKL_NUM_THREADS for child processes); default: torch's own choice")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "mnist_protocols.json", help="JSON results file (default: benchmarks/results/mnist_protocols.json)")
    parser.add_argument("--markdown", type=Path, default=None, help="also save the Markdown tables to this file")
    parser.add_argument("--join", type=Path, nargs="+", default=None, metavar="JSON",
                        help="run nothing: join the JSON files of runs over different digits (e.g. two halves run side by side) into one table")
    args = parser.parse_args(argv)
    args.digit_list = parse_digits(args.digits)
    args.protocol_list = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = [p for p in args.protocol_list if p not in PROTOCOLS]
    if unknown or not args.protocol_list:
        parser.error(f"--protocols: unknown {unknown}; choose from {', '.join(PROTOCOLS)}")
    check_positive(parser, args, ("epochs", "max_train", "max_test", "score_repeats", "threads"))
    return args


def join_results(paths: list[Path]) -> str:
    """Markdown tables of several results files whose runs split the digits between them."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    tables = []
    for protocol in PROTOCOLS:
        parts = [run["protocols"][protocol]["methods"] for run in runs if protocol in run["protocols"]]
        if not parts:
            continue
        methods_out: dict = {}
        for part in parts:
            for name, out in part.items():
                methods_out.setdefault(name, {"per_digit": {}})["per_digit"].update(out["per_digit"])
        digits = sorted({int(d) for out in methods_out.values() for d in out["per_digit"]})
        reference = runs[0]["settings"]["reference_method"]
        summarise(methods_out, reference, "per_digit", "n_digits")
        tables.append(protocol_table(protocol, digits, methods_out, reference))
    sources = ", ".join(f"{Path(p).name} ({run['started_utc']})" for p, run in zip(paths, runs))
    return "\n".join(tables) + "\n" + _notes(runs[0]["settings"], runs[0]["machine"]) + f"Joined from {sources}.\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.join:
        text = join_results(args.join)
        print(text)
        if args.markdown is not None:
            write_text(args.markdown, text)
        return 0
    set_threads(args.threads)
    methods = select_methods(all_methods(use_pyod=not args.no_pyod), args.methods)
    reference = methods[0].name

    data_dir = resolve_dir(args.data_dir, MNIST_DIR_ENV, DEFAULT_DATA_DIR)
    try:
        X_train, y_train = load_mnist("train", data_dir=data_dir, download=False)
        X_test, y_test = load_mnist("test", data_dir=data_dir, download=False)
    except DataError as exc:
        sys.exit(f"error: {exc}")
    if args.max_test is not None:
        keep = subsample(np.arange(len(X_test)), args.max_test, seed=0)
        X_test, y_test = X_test[keep], y_test[keep]

    # One tiny fit and score per method first, so one-time costs (imports, JIT, thread pools)
    # do not land in the first digit's timings.
    for method in methods:
        try:
            method.score(method.build(1).fit(X_train[:200]), X_test[:200])
        except Exception as exc:  # noqa: BLE001 - the real run will report it
            log(f"warm-up of {method.name} failed: {type(exc).__name__}: {exc}")

    results = run_header("mnist_protocols")
    results["settings"] = {
        "data_dir": str(data_dir),
        "digits": args.digit_list,
        "protocols": args.protocol_list,
        "methods": [m.name for m in methods],
        "reference_method": reference,
        "epochs_override": args.epochs,
        "max_train": args.max_train,
        "max_test": args.max_test,
        "n_test": len(X_test),
        "score_repeats": args.score_repeats,
        "vaeguard_variants": {name: params for name, params in VAEGUARD_VARIANTS},
        "pca_components": PCA_COMPONENTS,
        "pyod_settings": PYOD_SETTINGS,
        "standard_protocol": args.epochs is None and args.max_train is None and args.max_test is None,
    }
    results["protocols"] = {}

    for protocol in args.protocol_list:
        methods_out = {m.name: {"per_digit": {}} for m in methods}
        proto = results["protocols"][protocol] = {"splits": {}, "methods": methods_out}
        for digit in args.digit_list:
            train_mask, labels = protocol_split(protocol, digit, y_train, y_test)
            train_idx = subsample(np.flatnonzero(train_mask), args.max_train, seed=digit)
            proto["splits"][str(digit)] = {"n_train": len(train_idx), "n_test": len(labels), "n_anomalies": int(labels.sum())}
            for method in methods:
                log(f"[{protocol} digit {digit}] {method.name}: fitting on {len(train_idx):,} images")
                try:
                    cell = run_cell(method, X_train[train_idx], X_test, labels, args.epochs, args.score_repeats)
                    log(f"    AUROC {cell['auroc']:.4f}  fit {cell['fit_s']:.1f}s  score {cell['score_s']:.2f}s")
                except Exception as exc:  # noqa: BLE001 - one failing method must not end a long run
                    cell = {"error": f"{type(exc).__name__}: {exc}"}
                    log(f"    FAILED: {cell['error']}")
                methods_out[method.name]["per_digit"][str(digit)] = cell
                summarise(methods_out, reference, "per_digit", "n_digits")
                write_json(args.out, results)  # after every cell, so a long run keeps its progress

    tables = "\n".join(
        protocol_table(p, args.digit_list, results["protocols"][p]["methods"], reference) for p in args.protocol_list
    )
    publish(results, tables + "\n" + _notes(results["settings"], results["machine"]), args.out, args.markdown)
    return 0


def _notes(settings: dict, machine: dict) -> str:
    gpu = machine["gpu"]["name"] if machine["gpu"] else "no GPU"
    lines = [
        f"Machine: {machine['usable_cpus']} usable CPUs, {machine['torch_threads']} torch threads, {gpu}; "
        f"torch {machine['versions']['torch']}, vaeguard {machine['versions']['vaeguard']}.",
        f"Fit/score seconds: median over digits (score: median of {settings['score_repeats']} repeats); "
        f"'fit × {settings['reference_method']}' is the median per-digit ratio of fit times measured in the same run.",
        "Recall @ threshold: the share of the test anomalies that vaeguard flags at its default threshold (conformal "
        "1% false-positive rate), mean over digits; '-': no threshold of its own.",
    ]
    if not settings["standard_protocol"]:
        lines.append(
            f"NOT the standard protocol: epochs override {settings['epochs_override']}, max train "
            f"{settings['max_train']}, max test {settings['max_test']}."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
