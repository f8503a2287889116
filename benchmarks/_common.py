"""Shared pieces of the benchmark scripts: machine description, timing, tables, JSON output.

Not part of the package. The scripts import it as a sibling module (they run as
`python benchmarks/<name>.py`, which puts this folder first on sys.path).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # Lets the scripts import vaeguard from the checkout without installing it.
    sys.path.insert(0, str(REPO_ROOT))

from vaeguard.atomic import atomic_write  # noqa: E402


def optional_version(module: str) -> str | None:
    """The module's __version__, or None when it cannot be imported."""
    try:
        return getattr(__import__(module), "__version__", "unknown")
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None


def git_commit() -> str | None:
    """HEAD of the checkout, with '+dirty' when the working tree has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine_info() -> dict:
    """What the numbers were measured on: CPUs, torch threads, GPU, library versions."""
    import numpy
    import sklearn
    import torch

    import vaeguard

    try:
        usable_cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cpus = os.cpu_count()
    gpu = None
    if torch.cuda.is_available():
        gpu = {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(), "cuda": torch.version.cuda}
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "load_average_1m_5m_15m": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "gpu": gpu,
        "versions": {
            "python": platform.python_version(),
            "vaeguard": vaeguard.__version__,
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__,
            "pyod": optional_version("pyod"),
        },
        "git_commit": git_commit(),
    }


def run_header(name: str) -> dict:
    """The start of every results file: benchmark name, exact command line, time, machine."""
    return {
        "benchmark": name,
        "command": shlex.join([sys.executable, *sys.argv]),
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
    }


def finish(results: dict) -> dict:
    """Mark a results dict complete, with the end time and load (to judge how noisy the run was)."""
    results["finished_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    results["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["finished"] = True
    return results


def publish(results: dict, text: str, out: str | Path, markdown: str | Path | None = None) -> None:
    """End a run: mark the results complete, write them as JSON, print the tables (and save them)."""
    write_json(out, finish(results))
    print(text)
    if markdown is not None:
        write_text(markdown, text)
    log(f"wrote {out}" + (f" and {markdown}" if markdown else ""))


def resolve_dir(cli_value: str | None, env: str, default: Path) -> Path:
    """A data folder: the command-line value, else the environment variable `env`, else `default`."""
    if cli_value:
        return Path(cli_value).expanduser()
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    return default


def summarise(methods_out: dict, reference: str, cells: str, count: str) -> None:
    """Per method: mean AUROC, median fit/score seconds, median per-cell fit-time ratio to `reference`.

    Each method's results hold one cell per data set or digit under `cells` ("per_set",
    "per_digit"); the summary counts them under `count` ("n_sets", "n_digits").
    """
    ref = methods_out.get(reference, {}).get(cells, {})
    for out in methods_out.values():
        done = {k: c for k, c in out[cells].items() if "auroc" in c}
        aurocs = [c["auroc"] for c in done.values()]
        ratios = [c["fit_s"] / ref[k]["fit_s"] for k, c in done.items() if "fit_s" in ref.get(k, {})]
        out["summary"] = {
            count: len(done),
            "n_failed": len(out[cells]) - len(done),
            "mean_auroc": float(sum(aurocs) / len(aurocs)) if aurocs else None,
            "median_fit_s": median([c["fit_s"] for c in done.values()]) if done else None,
            "median_score_s": median([c["score_s"] for c in done.values()]) if done else None,
            "median_fit_ratio_vs_reference": median(ratios) if ratios else None,
        }


def select_methods(methods: list, spec: str | None) -> list:
    """The methods (objects with a `name`) whose names contain one of the comma-separated,
    case-insensitive substrings of `spec` (--methods); all of them when `spec` is empty.
    Exits with the available names when none match."""
    if not spec:
        return methods
    wanted = [w.strip().lower() for w in spec.split(",") if w.strip()]
    chosen = [m for m in methods if any(w in m.name.lower() for w in wanted)]
    if not chosen:
        sys.exit(f"--methods {spec!r} matches none of: {', '.join(m.name for m in methods)}")
    return chosen


def check_positive(parser, args, names: Sequence[str]) -> None:
    """parser.error (exit 2) for the first of these options that is given and below 1."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def set_threads(n: int | None) -> None:
    """Use n threads (torch, BLAS) here and in child processes (OMP/MKL/OpenBLAS env); None: defaults."""
    if n is None:
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(n)  # numpy/scikit-learn BLAS and OpenMP pools, already loaded
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)


def conformal_fit(build: Callable[[], object], score: Callable[[object, "np.ndarray"], "np.ndarray"], X: "np.ndarray",
                  fpr: float = 0.01, share: float = 0.2) -> tuple[object, float]:
    """A peer's own conformal threshold, as vaeguard sets one: fit on a seed-0 (1 - share) of X's
    rows, threshold = vaeguard.calibration.conformal_threshold of the other rows' scores (their
    largest score when they are too few for `fpr`, as VAEAnomalyDetector.set_threshold does)."""
    import numpy as np

    from vaeguard.calibration import conformal_threshold
    from vaeguard.errors import DataError

    order = np.random.default_rng(0).permutation(len(X))
    n_cal = max(1, round(share * len(X)))
    est = build().fit(X[order[n_cal:]])
    calibration = np.asarray(score(est, X[order[:n_cal]]), dtype=np.float64)
    try:
        return est, conformal_threshold(calibration, fpr)
    except DataError:
        return est, float(np.max(calibration))


def flagged_share(scores, threshold: float) -> float:
    """Share of rows a threshold flags (vaeguard.calibration.is_flagged: above it, or not finite)."""
    from vaeguard.calibration import is_flagged

    return float(is_flagged(scores, threshold).mean())


def write_json(path: str | Path, data: dict) -> Path:
    """Write `data` as indented JSON, atomically (a crash never leaves half a file)."""
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=_jsonable)
        fh.write("\n")
    return path


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def _jsonable(value):
    """numpy scalars/arrays and paths, which json cannot write by itself."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def plain(value):
    """A JSON-ready copy of a parameter value (repr for objects such as torch devices)."""
    if isinstance(value, (int, float, str, bool, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return repr(value)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if len(values) else float("nan")


def time_repeats(fn: Callable[[], object], repeats: int, sync: Callable[[], None] | None = None) -> list[float]:
    """Wall seconds of `repeats` calls of fn (sync, e.g. cuda.synchronize, runs inside the clock)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    return times


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; the first column is left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(cells[0]) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines) + "\n"


def fmt(value: float | None, digits: int = 3) -> str:
    """Compact number for tables: '-' for missing, thousands separators for big values."""
    if value is None or value != value:  # None or NaN
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{digits}f}".rstrip("0").rstrip(".")


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the Markdown tables."""
    print(message, file=sys.stderr, flush=True)
