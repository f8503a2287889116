"""Throughput benchmark: how close vaeguard gets to the machine's practical compute limit.

Parts (all by default; pick some with --parts):
  matmul  plain torch float32 matmul FLOP/s: the practical limit of this machine
  train   vaeguard training samples/s and achieved FLOP/s with the default model on
          MNIST-shaped data (784 features in [0, 1]), and its share of the matmul FLOP/s
  score   default anomaly-score samples/s on 10k samples, vs PyOD VAE's decision_function
  csv     streaming CSV scoring through `python -m vaeguard score` in a subprocess:
          rows/s and peak resident memory, for a 1M-row file and a >= 1 GB file

FLOP counting (train and score). For a Linear layer with W = in*out weights, one sample costs
2W FLOPs forward (a multiply and an add per weight) and 4W backward (gradients with respect to
the input and to the weights), so
    training FLOPs  = 6 * W_total * samples      scoring FLOPs = 2 * W_total * samples
where W_total sums in*out over every nn.Linear of the model. Biases, activations, the
likelihood, the optimizer step and score extras (the pixel-context model of score_type="ratio")
are left out, so achieved FLOP/s is an underestimate.

Ratios are paired: the matmul is timed right before and after every train/score repeat, and
"x matmul" is the median over repeats of achieved FLOP/s over the mean of those two readings.
On a shared machine use --threads 1 (see benchmarks/README.md).

Run from the repository root:  python benchmarks/throughput.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import REPO_ROOT, fmt, log, markdown_table, median, publish, run_header, set_threads, time_repeats, write_json

import torch
from torch import nn

from vaeguard import VAEAnomalyDetector
from vaeguard.atomic import atomic_write
from vaeguard.model import VAE
from vaeguard.devices import resolve_device
from vaeguard.training import TrainConfig, train_vae

PARTS = ("matmul", "train", "score", "csv")
N_FEATURES = 784  # MNIST-shaped rows
# The small tabular detector trained for the streaming test (CLI `vaeguard train` options).
CSV_COLUMNS = 20
CSV_TRAIN_OPTIONS = ["--likelihood", "gaussian", "--hidden-dims", "64,32", "--latent-dim", "8", "--seed", "0"]
CSV_FLOAT_FORMAT = "%.6g"
TEXT_LEVELS = 20  # values of each text column of a mixed table (--csv-text-columns)

# (full, --quick) values of the size options; an explicit option wins over both.
SIZES = {
    "matmul_size": (1024, 512),
    "matmul_inner": (10, 5),
    "repeats": (5, 3),
    "train_samples": (20_000, 1_000),
    "train_epochs": (3, 1),
    "score_samples": (10_000, 2_000),
    "pyod_fit_samples": (2_000, 300),
    "csv_rows": (1_000_000, 10_000),
    "csv_gb": (1.0, 0.0),
    "csv_train_rows": (20_000, 1_000),
    "csv_train_epochs": (10, 1),
}


def linear_weights(model: nn.Module) -> int:
    """W_total: the number of weights (in*out) over all nn.Linear layers of `model`."""
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))


def _sync(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else None


# ---------------------------------------------------------------------------- (a) matmul


class MatmulProbe:
    """`inner` back-to-back size x size float32 matmuls; `flop_s()` times one batch of them.

    Besides the standalone measurement, the train and score parts call it right before and
    after each of their repeats, so every "x matmul" ratio compares two numbers taken seconds
    apart: load from other jobs moves both alike.
    """

    def __init__(self, size: int, inner: int, device: torch.device):
        gen = torch.Generator(device="cpu").manual_seed(0)
        self.size, self.inner, self.device = size, inner, device
        self.a = torch.randn(size, size, generator=gen).to(device)
        self.b = torch.randn(size, size, generator=gen).to(device)
        self.out = torch.empty(size, size, device=device)
        self.flops = 2.0 * size**3 * inner
        self.readings: list[float] = []
        time_repeats(self._work, 2, _sync(device))  # warm-up: thread pools, caches, CUDA kernels

    def _work(self) -> None:
        for _ in range(self.inner):
            torch.matmul(self.a, self.b, out=self.out)

    def flop_s(self) -> float:
        reading = self.flops / time_repeats(self._work, 1, _sync(self.device))[0]
        self.readings.append(reading)
        return reading


def bench_matmul(probe: MatmulProbe, repeats: int) -> dict:
    """Median FLOP/s of the probe over `repeats` (best shown too: the limit on a quiet machine)."""
    readings = [probe.flop_s() for _ in range(repeats)]
    return {"size": probe.size, "inner": probe.inner, "repeats": repeats, "flop_s_repeats": readings,
            "flops_per_repeat": probe.flops, "flop_s": median(readings), "best_flop_s": max(readings)}


def _paired(probe: MatmulProbe | None, fn) -> tuple[object, float | None]:
    """fn() between two probe readings; returns fn's result and the mean of the two readings."""
    if probe is None:
        return fn(), None
    before = probe.flop_s()
    result = fn()
    return result, (before + probe.flop_s()) / 2


# ---------------------------------------------------------------------------- (b) training


def default_detector(**overrides) -> VAEAnomalyDetector:
    """The package's default detector (whatever its defaults are today) with a fixed seed, for
    the MNIST-shaped rows of this script, declared as 28x28 images."""
    return VAEAnomalyDetector(random_state=0, input_shape=(1, 28, 28), **overrides)


def bench_train(X: np.ndarray, epochs: int, repeats: int, device: torch.device, probe: MatmulProbe | None) -> dict:
    """Training-loop throughput of the default model: samples/s and FLOP/s per epoch.

    The model and optimizer settings come from a default detector fitted for one epoch on a
    small slice (so no architecture is written down here); the loop is the package's
    `train_vae` without a validation set, so an epoch is pure training. Each repeat trains a
    fresh model for `epochs` epochs between two matmul probe readings.
    """
    probe_det = default_detector(epochs=1, device=str(device)).fit(X[: min(len(X), 500)])
    config = probe_det.config_
    train_cfg = TrainConfig(epochs=epochs, batch_size=probe_det.batch_size,
                            learning_rate=probe_det.learning_rate, beta=probe_det.beta)
    weights = linear_weights(VAE(config))
    epoch_seconds, flop_s_repeats, ratios = [], [], []
    for rep in range(repeats):
        torch.manual_seed(rep)
        model = VAE(config)
        history, matmul = _paired(probe, lambda: train_vae(model, X, None, train_cfg, seed=rep, device=device))
        epoch_seconds.append(history["epoch_seconds"])
        flop_s_repeats.append(6.0 * weights * len(X) / median(history["epoch_seconds"]))
        if matmul:
            ratios.append(flop_s_repeats[-1] / matmul)
    seconds = median([s for rep in epoch_seconds for s in rep])
    return {
        "n_samples": len(X), "n_features": X.shape[1], "epochs_per_repeat": epochs, "repeats": repeats,
        "model_config": config.to_dict(), "train_config": train_cfg.to_dict(),
        "linear_weights": weights, "epoch_seconds": epoch_seconds, "median_epoch_s": seconds,
        "samples_s": len(X) / seconds, "flop_s": 6.0 * weights * len(X) / seconds,
        "flop_s_repeats": flop_s_repeats, "matmul_ratio_repeats": ratios,
        "fraction_of_matmul": median(ratios) if ratios else None,
        "flop_count": "6 * linear_weights * samples per epoch",
        "only_linear_layers_counted": config.architecture != "mlp",
    }


# ---------------------------------------------------------------------------- (c) scoring


def bench_score(X_fit: np.ndarray, X: np.ndarray, repeats: int, pyod_fit_samples: int,
                device: torch.device, probe: MatmulProbe | None, use_pyod: bool) -> dict:
    """anomaly_score samples/s of a default detector, with PyOD VAE's decision_function (and the
    plain ELBO score when the default is another one) timed in the same repeats, interleaved."""
    det = default_detector(epochs=1, device=str(device)).fit(X_fit)
    contenders: dict[str, dict] = {"vaeguard": {"fn": lambda: det.anomaly_score(X), "weights": linear_weights(det.model_)}}
    if det.score_type_ != "elbo":
        # The plain negative ELBO beside the default score shows what the default's extras cost.
        elbo = default_detector(epochs=1, device=str(device), score_type="elbo").fit(X_fit)
        contenders["vaeguard_elbo"] = {"fn": lambda: elbo.anomaly_score(X), "weights": linear_weights(elbo.model_)}
    out: dict = {"n_samples": len(X), "repeats": repeats, "score_type": det.score_type_}
    if use_pyod:
        pyod = _fit_pyod_vae(X_fit[:pyod_fit_samples])
        if "estimator" in pyod:
            est = pyod.pop("estimator")
            contenders["pyod_vae"] = {"fn": lambda: est.decision_function(X), "weights": pyod["linear_weights"]}
        out["pyod_vae"] = pyod

    for c in contenders.values():
        c["fn"]()  # warm-up
        c["seconds"], c["ratios"] = [], []
    for _ in range(repeats):
        for c in contenders.values():
            seconds, matmul = _paired(probe, lambda: time_repeats(c["fn"], 1)[0])
            c["seconds"].append(seconds)
            if matmul and c["weights"]:
                c["ratios"].append(2.0 * c["weights"] * len(X) / seconds / matmul)
    for name, c in contenders.items():
        t = median(c["seconds"])
        out.setdefault(name, {}).update(
            seconds=c["seconds"], samples_s=len(X) / t, linear_weights=c["weights"],
            flop_s=2.0 * c["weights"] * len(X) / t if c["weights"] else None,
            matmul_ratio_repeats=c["ratios"], fraction_of_matmul=median(c["ratios"]) if c["ratios"] else None,
        )
    if "pyod_vae" in contenders:
        pairs = zip(contenders["vaeguard"]["seconds"], contenders["pyod_vae"]["seconds"])
        out["vaeguard_over_pyod_vae"] = median([p / v for v, p in pairs])  # samples/s ratio per repeat
    out["flop_count"] = "2 * linear_weights * samples (one encoder+decoder pass)"
    return out


def _fit_pyod_vae(X_fit: np.ndarray) -> dict:
    try:
        from pyod.models.vae import VAE as PyodVAE
    except Exception as exc:  # noqa: BLE001 - PyOD is optional
        return {"skipped": f"PyOD not usable: {type(exc).__name__}: {exc}"}
    settings = {"epoch_num": 1, "verbose": 0, "random_state": 0}  # a fitted model is all we need
    est = PyodVAE(**settings).fit(X_fit)
    model = getattr(est, "model", None)
    return {"estimator": est, "settings": settings, "n_fit": len(X_fit),
            "linear_weights": linear_weights(model) if isinstance(model, nn.Module) else None}


# ---------------------------------------------------------------------------- (d) streaming CSV


def write_csv(path: Path, *, rows: int | None = None, min_bytes: int | None = None, seed: int = 0,
              chunk: int = 100_000, text_columns: int = 0) -> dict:
    """A CSV: an id column, CSV_COLUMNS standard-normal floats and `text_columns` text columns
    of TEXT_LEVELS values each (a mixed table, #21), to `rows` rows or `min_bytes`."""
    rng = np.random.default_rng(seed)
    fmt_row = ["%d"] + [CSV_FLOAT_FORMAT] * CSV_COLUMNS + ["level%d"] * text_columns
    written = 0
    with atomic_write(path, "w", newline="") as fh:
        fh.write(",".join(["id", *[f"x{i}" for i in range(CSV_COLUMNS)], *[f"t{i}" for i in range(text_columns)]]) + "\n")
        while (rows is not None and written < rows) or (min_bytes is not None and fh.tell() < min_bytes):
            if rows is not None:
                n = min(chunk, rows - written)
            else:  # size the next chunk from the bytes per row so far, to stop just past min_bytes
                per_row = fh.tell() / written if written else 200.0
                n = int(min(chunk, max(1, (min_bytes - fh.tell()) / per_row + 1)))
            block = np.empty((n, CSV_COLUMNS + 1 + text_columns))
            block[:, 0] = np.arange(written, written + n)
            block[:, 1 : CSV_COLUMNS + 1] = rng.standard_normal((n, CSV_COLUMNS))
            block[:, CSV_COLUMNS + 1 :] = rng.integers(0, TEXT_LEVELS, (n, text_columns))
            np.savetxt(fh, block, fmt=fmt_row, delimiter=",")
            written += n
    return {"path": str(path), "rows": written, "bytes": path.stat().st_size, "seed": seed, "columns": CSV_COLUMNS + 1 + text_columns}


def ensure_csv(path: Path, keep: bool, **spec) -> dict:
    """Reuse `path` when --keep is given and its sidecar says it was made with the same spec."""
    meta_path = path.with_name(path.name + ".meta.json")
    wanted = dict(spec)
    if keep and path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("spec") == wanted and meta.get("bytes") == path.stat().st_size:
            log(f"reusing {path} ({meta['rows']:,} rows, {meta['bytes'] / 1e6:,.0f} MB)")
            return {**meta, "reused": True}
    log(f"writing {path} ...")
    start = time.perf_counter()
    meta = write_csv(path, **spec)
    meta.update(spec=wanted, write_s=time.perf_counter() - start)
    write_json(meta_path, meta)
    return {**meta, "reused": False}


# Runs one command and writes its wall seconds and peak RSS as JSON to argv[1]. It is started
# with `python -S` so it stays small: Linux carries a process's peak RSS through fork and exec,
# so a child forked straight from this (torch-laden) process would report at least our own RSS.
_LAUNCHER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[3:], stdout=open(sys.argv[2], "w"), stderr=subprocess.STDOUT)
wall = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open(sys.argv[1], "w") as fh:
    json.dump({"returncode": code, "wall_s": wall, "peak_rss_kb": peak_kb}, fh)
"""


def run_measured(cmd: list[str], log_path: Path) -> dict:
    """Run `cmd` through the small launcher; its wall seconds and peak resident memory
    (RUSAGE_CHILDREN of the launcher, whose only child is `cmd`)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    result_path = log_path.with_suffix(".rusage.json")
    subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, str(result_path), str(log_path), *cmd],
                   cwd=REPO_ROOT, env=env, check=True)
    measured = json.loads(result_path.read_text())
    result_path.unlink()
    text = log_path.read_text(errors="replace")
    if measured["returncode"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {measured['returncode']}:\n{text[-2000:]}")
    return {"command": cmd, "wall_s": measured["wall_s"], "peak_rss_mb": measured["peak_rss_kb"] / 1024,
            "output_tail": text[-500:]}


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            n += block.count(b"\n")
    return n


def _score_csv(data: dict, model: Path, work_dir: Path, cli: list[str], device: str, startup_s: float, keep: bool,
               repeats: int = 1) -> dict:
    """`repeats` `vaeguard score` runs over the file `data` describes (each checked to give every
    row an output row): the median wall time, and the highest peak RSS of the runs."""
    scores = work_dir / (Path(data["path"]).stem + "_scores.csv")
    cmd = [*cli, "score", str(model), data["path"], "-o", str(scores), "--device", device]
    runs = []
    try:
        for rep in range(repeats):
            log(f"scoring {data['rows']:,} rows ({data['bytes'] / 1e6:,.0f} MB), run {rep + 1} of {repeats}: " + shlex.join(cmd))
            runs.append(run_measured(cmd, work_dir / "score.log"))
            lines = count_lines(scores)
            if lines != data["rows"] + 1:
                raise RuntimeError(f"{scores} has {lines - 1} data rows, expected {data['rows']}")
        wall = median([r["wall_s"] for r in runs])
        run = {**runs[-1], "wall_s": wall, "wall_s_repeats": [r["wall_s"] for r in runs], "repeats": repeats,
               "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "peak_rss_mb_repeats": [r["peak_rss_mb"] for r in runs]}
        run.update(rows=data["rows"], bytes=data["bytes"], output_bytes=scores.stat().st_size,
                   rows_s=data["rows"] / wall, s_per_million_rows=wall / data["rows"] * 1e6,
                   rows_s_after_startup=data["rows"] / (wall - startup_s) if wall > startup_s else None)
    finally:
        if not keep:
            scores.unlink(missing_ok=True)
    return run


def bench_csv(work_dir: Path, rows: int, gb: float, train_rows: int, train_epochs: int, keep: bool,
              device: str, cli_prefix: list[str], text_columns: int = 0, repeats: int = 1) -> dict:
    """Train a small gaussian detector via the CLI, then stream-score the big files via the CLI."""
    work_dir.mkdir(parents=True, exist_ok=True)
    cli = [*cli_prefix, "-q"]
    train_csv = ensure_csv(work_dir / f"train_{train_rows}rows.csv", keep, rows=train_rows, seed=1, text_columns=text_columns)
    model = work_dir / "csv_model.vgm"
    files: list[dict] = []
    try:
        train_cmd = [*cli, "train", train_csv["path"], "-o", str(model), "--id-column", "id",
                     "--epochs", str(train_epochs), *CSV_TRAIN_OPTIONS, "--device", device]
        log("training the streaming-test detector: " + shlex.join(train_cmd))
        out = {"train_file": train_csv, "train": run_measured(train_cmd, work_dir / "train.log")}
        # Interpreter + torch + vaeguard start-up, for reading the scoring figures below.
        out["startup"] = run_measured([*cli, "info", str(model)], work_dir / "info.log")
        if rows:
            files.append(ensure_csv(work_dir / f"data_{rows}rows.csv", keep, rows=rows, seed=2, text_columns=text_columns))
        if gb:
            files.append(ensure_csv(work_dir / f"data_{gb:g}gb.csv", keep, min_bytes=int(gb * 1e9), seed=3, text_columns=text_columns))
        out["runs"] = [_score_csv(data, model, work_dir, cli, device, out["startup"]["wall_s"], keep, repeats) for data in files]
    finally:
        if not keep:
            for data in [train_csv, *files]:
                for p in (Path(data["path"]), Path(data["path"] + ".meta.json")):
                    p.unlink(missing_ok=True)
            for p in (model, work_dir / "train.log", work_dir / "info.log", work_dir / "score.log"):
                p.unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------------------- report


def tables(results: dict) -> str:
    """Markdown tables of everything measured in this run."""
    parts = []
    rows = []
    mm = results.get("matmul")
    if mm:
        rows.append([f"torch float32 matmul {mm['size']}x{mm['size']} (practical limit; best {fmt(mm['best_flop_s'] / 1e9)})",
                     "-", fmt(mm["flop_s"] / 1e9), "1"])
    tr = results.get("train")
    if tr:
        rows.append([f"vaeguard training, default model ({tr['linear_weights']:,} linear weights)",
                     fmt(tr["samples_s"]), fmt(tr["flop_s"] / 1e9), fmt(tr["fraction_of_matmul"])])
    sc = results.get("score")
    if sc:
        labels = {"vaeguard": f"vaeguard scoring ({sc['score_type']})", "vaeguard_elbo": "vaeguard scoring (elbo, for reference)",
                  "pyod_vae": "PyOD VAE decision_function"}
        for key, label in labels.items():
            c = sc.get(key, {})
            if "samples_s" in c:
                w = f", {c['linear_weights']:,} linear weights" if c.get("linear_weights") else ""
                rows.append([f"{label}, {sc['n_samples']:,} samples{w}", fmt(c["samples_s"]),
                             fmt(c["flop_s"] / 1e9) if c.get("flop_s") else "-", fmt(c.get("fraction_of_matmul"))])
    if rows:
        parts.append("### Compute throughput (medians)\n\n" + markdown_table(["what", "samples/s", "GFLOP/s", "× matmul (paired)"], rows))
        if sc and "vaeguard_over_pyod_vae" in sc:
            parts.append(f"vaeguard scoring runs at {sc['vaeguard_over_pyod_vae']:.2f}× PyOD VAE's samples/s "
                         "(median of per-repeat ratios, interleaved in the same run).\n")
        parts.append("'× matmul (paired)': median over repeats of achieved FLOP/s divided by the matmul FLOP/s "
                     "measured just before and after that repeat.\n")
    cs = results.get("csv")
    if cs:
        rows = [["start-up only (`vaeguard info`)", "-", "-", fmt(cs["startup"]["wall_s"]), "-", "-", "-", fmt(cs["startup"]["peak_rss_mb"])]]
        for run in cs["runs"]:
            rows.append([f"`vaeguard score` {run['rows']:,} rows", fmt(run["bytes"] / 1e6), f"{run['rows']:,}", fmt(run["wall_s"]),
                         fmt(run["rows_s"]), fmt(run["rows_s_after_startup"]), fmt(run["s_per_million_rows"]), fmt(run["peak_rss_mb"])])
        n_runs = cs["runs"][0].get("repeats", 1) if cs["runs"] else 1
        parts.append(f"### Streaming CSV scoring (subprocess, end to end; median wall of {n_runs} run(s) per file, highest peak RSS)\n\n"
                     + markdown_table(["run", "MB", "rows", "wall s", "rows/s", "rows/s after start-up", "s per 1M rows", "peak RSS MB"], rows))
    m = results["machine"]
    gpu = m["gpu"]["name"] if m["gpu"] else "no GPU"
    parts.append(f"Machine: {m['usable_cpus']} usable CPUs, {m['torch_threads']} torch threads, {gpu}, device "
                 f"{results['settings']['device']}; torch {m['versions']['torch']}. Medians of {results['settings']['repeats']} repeats.\n")
    return "\n".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole script runs in well under a minute")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts to run (default: {','.join(PARTS)})")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--no-pyod", action="store_true", help="skip the PyOD comparison even when PyOD is installed")
    for name, (full, quick) in SIZES.items():
        kind = type(full)
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=f"default {full:,} ({quick:,} with --quick)")
    parser.add_argument("--cli", default=f"{shlex.quote(sys.executable)} -m vaeguard",
                        help="command that runs the vaeguard CLI for the csv part (default: this Python with -m vaeguard)")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "vaeguard-bench",
                        help="where the CSV files, model and scores go (default: %(default)s)")
    parser.add_argument("--csv-text-columns", type=int, default=0, help="csv part: add this many text columns of 20 values each (a mixed table, #21)")
    parser.add_argument("--csv-repeats", type=int, default=1, help="csv part: score each file this many times and report the median wall time (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files and reuse matching ones from an earlier --keep run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (also OMP/MKL_NUM_THREADS for child processes); default: torch's own choice")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "throughput.json", help="JSON results file (default: benchmarks/results/throughput.json)")
    parser.add_argument("--markdown", type=Path, default=None, help="also save the Markdown tables to this file")
    args = parser.parse_args(argv)
    args.part_list = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not args.part_list or any(p not in PARTS for p in args.part_list):
        parser.error(f"--parts: choose from {', '.join(PARTS)}, got {args.parts!r}")
    for name, (full, quick) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
        if args.threads is not None and args.threads < 1:
            parser.error(f"--threads must be at least 1, got {args.threads}")
        if getattr(args, name) < 0 or (getattr(args, name) == 0 and name not in ("csv_rows", "csv_gb")):
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.csv_repeats < 1:
        parser.error(f"--csv-repeats must be at least 1, got {args.csv_repeats}")
    if "csv" in args.part_list and not (args.csv_rows or args.csv_gb):
        parser.error("--csv-rows and --csv-gb are both 0: nothing to score")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    device = resolve_device(args.device)
    results = run_header("throughput")
    results["settings"] = {name: getattr(args, name) for name in SIZES} | {
        "parts": args.part_list, "device": str(device), "quick": args.quick, "csv_train_options": CSV_TRAIN_OPTIONS,
        "csv_columns": CSV_COLUMNS, "work_dir": str(args.work_dir), "keep": args.keep,
        "csv_text_columns": args.csv_text_columns, "csv_repeats": args.csv_repeats,
    }
    use_pyod = not args.no_pyod
    rng = np.random.default_rng(0)
    mnist_like = lambda n: rng.random((n, N_FEATURES), dtype=np.float32)  # noqa: E731
    probe = None
    if "matmul" in args.part_list:
        log("matmul ...")
        probe = MatmulProbe(args.matmul_size, args.matmul_inner, device)
        results["matmul"] = bench_matmul(probe, args.repeats)
    if "train" in args.part_list:
        log("training ...")
        results["train"] = bench_train(mnist_like(args.train_samples), args.train_epochs, args.repeats, device, probe)
    if "score" in args.part_list:
        log("scoring ...")
        results["score"] = bench_score(mnist_like(max(args.pyod_fit_samples, 1000)), mnist_like(args.score_samples),
                                       args.repeats, args.pyod_fit_samples, device, probe, use_pyod)
    if probe is not None:
        results["matmul"]["all_probe_readings"] = probe.readings
    write_json(args.out, results)
    if "csv" in args.part_list:
        log("streaming CSV ...")
        results["csv"] = bench_csv(args.work_dir, args.csv_rows, args.csv_gb, args.csv_train_rows,
                                   args.csv_train_epochs, args.keep, args.device, shlex.split(args.cli), args.csv_text_columns,
                                   args.csv_repeats)
    publish(results, tables(results), args.out, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
