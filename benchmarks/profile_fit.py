"""Where a default fit and a scoring call spend their time (issue #23): torch.profiler, per op and per part.

Three cases, each with `VAEAnomalyDetector(random_state=0)` at the package defaults (a
capped epoch count, `--epochs`, so the run is short; the per-epoch shares are those of a
full fit, and the table gives the epoch count a full fit would take):

- `fashion`: Fashion-MNIST class 0 by the one-class protocol (4,900 training images / 255,
  `input_shape=(1, 28, 28)`): the convolutional model, gaussian likelihood, `fused` score;
- `mnist`: the MNIST training images of digit 0 (5,923) with the defaults: the MLP;
- `table`: a 200,000-row, 10-column table (`table_rows`: a rank-3 linear pattern plus noise).

Then `score_samples` on `--score-rows` rows of the same kind. The profiler gives each op's
self CPU time; the parts come from `record_function` labels put around the library's
functions for the run (input checks, the training steps, validation passes, the latent
reference codes, the pixel-context model, scoring the calibration and training rows), and
the step's own parts from the top-level events (the autograd engine's functions for the
backward pass, the optimizer, gradient clipping, host reads; forward is the rest).

    python benchmarks/profile_fit.py --threads 1 --markdown benchmarks/results/profile_fit.md
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from _common import REPO_ROOT, finish, log, publish, resolve_dir, run_header, set_threads

# (module, attribute, label): wrapped in a record_function of that label during a profile
PARTS = [
    ("vaeguard.estimator", "validate_data", "input checks"),
    ("vaeguard.estimator", "check_finite", "input checks"),
    ("vaeguard.estimator", "train_vae", "training (all epochs)"),
    ("vaeguard.training", "evaluate_loss", "validation passes"),
    ("vaeguard.estimator", "fit_latent_neighbours", "latent reference codes"),
    ("vaeguard.complexity", "LocalContextModel.fit", "pixel-context model"),
    ("vaeguard.scorer", "Scorer.score_and_explain", "scoring (front-end)"),
    ("torch.nn.utils", "clip_grad_norm_", "gradient clipping"),
]
FIT_PARTS = ["input checks", "training steps", "validation passes", "latent reference codes",
             "pixel-context model", "scoring calibration and training rows", "other"]


def table_rows(n: int, n_features: int = 10, seed: int = 0, anomalous: bool = False) -> np.ndarray:
    """Rows of a rank-3 linear pattern plus noise; `anomalous` rows sit off the pattern."""
    W = np.random.default_rng(12345).normal(size=(3, n_features))
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) @ W + 0.2 * rng.normal(size=(n, n_features))
    if anomalous:
        X[:, :3] += rng.choice([-1.0, 1.0], size=(n, 3))
    return X


def _mnist_digit(mnist_dir, digit: int, split: str = "train") -> np.ndarray:
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(mnist_dir / f"{prefix}-images-idx3-ubyte.gz") as fh:
        images = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(mnist_dir / f"{prefix}-labels-idx1-ubyte.gz") as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8)
    keep = labels == digit if digit >= 0 else np.ones(len(labels), bool)
    return images[keep].astype(np.float32) / 255.0


def load_cases(data_dir, mnist_dir, score_rows: int) -> dict:
    """name -> (training rows, scoring rows, extra estimator parameters)."""
    with np.load(data_dir / "fashion-oneclass" / "fashion0.npz") as data:
        x, y = data["x"], data["y"]
    normal = np.flatnonzero(y == 0)[np.random.default_rng(0).permutation(int((y == 0).sum()))]
    fashion = x.astype(np.float64) / 255.0
    train = fashion[normal[: int(0.7 * len(normal))]]
    mnist_train = _mnist_digit(mnist_dir, 0)
    mnist_test = _mnist_digit(mnist_dir, -1, "test")
    rows = lambda X: np.resize(X, (score_rows, X.shape[1]))  # noqa: E731 - repeat rows to the size
    return {
        "fashion": (train, rows(fashion), {"input_shape": (1, 28, 28)}),
        "mnist": (mnist_train, rows(mnist_test), {}),
        "table": (table_rows(200_000), table_rows(score_rows, seed=1), {}),
    }


@contextlib.contextmanager
def labelled_parts():
    """Wrap the PARTS functions in record_function labels; restore them afterwards."""
    import importlib

    saved = []
    for module_name, attr, label in PARTS:
        owner = importlib.import_module(module_name)
        *path, name = attr.split(".")
        for step in path:
            owner = getattr(owner, step)
        original = getattr(owner, name)

        def wrapper(*args, _original=original, _label=label, **kwargs):
            with record_function(_label):
                return _original(*args, **kwargs)

        setattr(owner, name, functools.wraps(original)(wrapper))
        saved.append((owner, name, original))
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


STEP_PARTS = ("backward", "optimizer", "gradient clipping", "host reads (.item, if tensor)")


def _step_part(op: str) -> str | None:
    """Which part of a training step a top-level event belongs to (by its name), or None."""
    if op.startswith("Optimizer.step") or op.startswith("Optimizer.zero_grad"):
        return "optimizer"
    if op.startswith("autograd::engine::evaluate_function"):
        return "backward"
    if op == "gradient clipping":
        return "gradient clipping"
    if op in ("aten::item", "aten::is_nonzero"):
        return "host reads (.item, if tensor)"
    return None


def summarise(prof, total_s: float, top: int) -> dict:
    """Parts (labels' CPU total), the step's parts (CPU total of their top-level events: the
    autograd engine's functions, the optimizer, clipping) and the top ops by self CPU time."""
    events = prof.key_averages()
    names = {p[2] for p in PARTS}
    labels = {e.key: e.cpu_time_total / 1e6 for e in events if e.key in names}
    ops = sorted((e for e in events if e.key not in labels), key=lambda e: e.self_cpu_time_total, reverse=True)
    self_total = sum(e.self_cpu_time_total for e in ops) / 1e6 or 1.0
    step = {}
    for e in events:
        part = _step_part(e.key)
        if part:
            step[part] = step.get(part, 0.0) + e.cpu_time_total / 1e6
    return {
        "total_s": total_s,
        "labels_s": labels,
        "step_parts_s": step,
        "ops": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "share": e.self_cpu_time_total / 1e6 / self_total,
                 "calls": e.count} for e in ops[:top]],
    }


def profile_case(X: np.ndarray, X_score: np.ndarray, params: dict, top: int) -> dict:
    from vaeguard import VAEAnomalyDetector

    with labelled_parts():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            detector = VAEAnomalyDetector(**params).fit(X)
            fit_s = time.perf_counter() - start
        fit = summarise(prof, fit_s, top)
        labels = fit["labels_s"]
        training = labels.get("training (all epochs)", 0.0)
        validation = labels.get("validation passes", 0.0)
        parts = {
            "input checks": labels.get("input checks", 0.0),
            "training steps": training - validation,
            "validation passes": validation,
            "latent reference codes": labels.get("latent reference codes", 0.0),
            "pixel-context model": labels.get("pixel-context model", 0.0),
            "scoring calibration and training rows": labels.get("scoring (front-end)", 0.0),
        }
        parts["other"] = max(0.0, fit_s - sum(parts.values()))
        fit["parts_s"] = parts
        detector.score_samples(X_score[:256])  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            detector.score_samples(X_score)
            score_s = time.perf_counter() - start
        score = summarise(prof, score_s, top)
    # the same calls without the profiler: its per-op overhead inflates small ops
    start = time.perf_counter()
    detector = VAEAnomalyDetector(**params).fit(X)
    plain_fit_s = time.perf_counter() - start
    start = time.perf_counter()
    detector.score_samples(X_score)
    plain_score_s = time.perf_counter() - start
    from vaeguard.training import auto_epochs

    n_train = len(X) - max(1, round(0.2 * len(X))) - max(1, round(0.1 * len(X)))
    return {
        "fit": fit, "score": score, "epochs_run": detector.n_epochs_, "epochs_auto": auto_epochs(n_train, 128),
        "architecture": detector.config_.architecture, "likelihood": detector.likelihood_, "score_type": detector.score_type_,
        "unprofiled_fit_s": plain_fit_s, "unprofiled_score_s": plain_score_s, "score_rows": len(X_score), "train_rows": len(X),
    }


def render(results: dict) -> str:
    s = results["settings"]
    lines = [f"`VAEAnomalyDetector(random_state=0, epochs={s['epochs']})`, {s['threads']} thread(s); "
             "torch.profiler CPU times (the profiler's per-op cost included; `unprofiled` = the same call without it)", ""]
    lines += ["### Fit, by part: seconds (share)", "",
              "| case | model | epochs (full fit) | fit s (unprofiled) | " + " | ".join(FIT_PARTS) + " |",
              "| --- | --- | --- | ---: | " + " | ".join("---:" for _ in FIT_PARTS) + " |"]
    for name, out in results["cases"].items():
        fit = out["fit"]
        cells = [f"{fit['parts_s'][p]:.2f} ({fit['parts_s'][p] / fit['total_s']:.0%})" for p in FIT_PARTS]
        lines.append(f"| {name} | {out['architecture']}, {out['likelihood']}, {out['score_type']} | {out['epochs_run']} "
                     f"({out['epochs_auto']}) | {fit['total_s']:.2f} ({out['unprofiled_fit_s']:.2f}) | " + " | ".join(cells) + " |")
    measured = {name: out for name, out in results["cases"].items() if "step_parts_s" in out["fit"]}  # not in older files
    if measured:
        lines += ["", "### Training step parts: CPU seconds (share of the training steps); forward = the rest", "",
                  "| case | forward | " + " | ".join(STEP_PARTS) + " |", "| --- | ---: | " + " | ".join("---:" for _ in STEP_PARTS) + " |"]
    for name, out in measured.items():
        step, steps_s = out["fit"]["step_parts_s"], out["fit"]["parts_s"]["training steps"]
        forward = steps_s - sum(step.get(p, 0.0) for p in STEP_PARTS)
        lines.append(f"| {name} | {forward:.2f} ({forward / steps_s:.0%}) | " + " | ".join(
            f"{step.get(p, 0.0):.2f} ({step.get(p, 0.0) / steps_s:.0%})" for p in STEP_PARTS) + " |")
    for what in ("fit", "score"):
        for name, out in results["cases"].items():
            head = (f"### Top ops of the fit: {name}" if what == "fit" else
                    f"### Top ops of `score_samples` on {out['score_rows']:,} rows: {name} "
                    f"({out['score']['total_s']:.2f} s profiled, {out['unprofiled_score_s']:.2f} s unprofiled: "
                    f"{out['score_rows'] / out['unprofiled_score_s']:,.0f} rows/s)")
            lines += ["", head, "", "| op | self s | share | calls |", "| --- | ---: | ---: | ---: |"]
            lines += [f"| `{o['op']}` | {o['self_s']:.3f} | {o['share']:.1%} | {o['calls']:,} |" for o in out[what]["ops"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="fashion,mnist,table")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3, help="epoch cap of the profiled fits (default 3)")
    parser.add_argument("--score-rows", type=int, default=10_000)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--mnist-dir", default=None)
    parser.add_argument("--out", default="benchmarks/results/profile_fit.json")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    data_dir = resolve_dir(args.data_dir, "VAEGUARD_DATA_DIR", REPO_ROOT.parent / "shared" / "data")
    mnist_dir = resolve_dir(args.mnist_dir, "VAEGUARD_MNIST_DIR", REPO_ROOT.parent / "shared" / "data" / "mnist")
    cases = load_cases(data_dir, mnist_dir, args.score_rows)
    results = run_header("profile_fit") | {"settings": vars(args), "cases": {}}
    for name in args.cases.split(","):
        X, X_score, extra = cases[name]
        log(f"{name}: {X.shape}")
        results["cases"][name] = profile_case(X, X_score, {"random_state": 0, "epochs": args.epochs, **extra}, args.top)
    publish(finish(results), render(results), args.out, args.markdown)


if __name__ == "__main__":
    main()
