"""The speed targets of issue #23, each beside its peer in the same run (one thread each).

| part | measured | target |
| --- | --- | --- |
| `fashion` | Fashion-MNIST class `--fashion-class` by the one-class protocol: default fit seconds and scoring samples/s (the test images) of `VAEAnomalyDetector(random_state=0, input_shape=(1, 28, 28))` and of PyOD's `VAE(verbose=0, random_state=0)` (its defaults), interleaved; AUROC of both | fit <= PyOD's, scoring >= PyOD's |
| `mnist` | the MLP a default detector builds for MNIST digits (bernoulli): training FLOP/s (`training.train_vae`, no validation) over the paired matmul FLOP/s, and `anomaly_score` samples/s on 10,000 test digits | >= 0.5x matmul; >= 100,000 samples/s |
| `table` | the default fit of a 200,000-row, 10-column table (`profile_fit.table_rows`), and its AUROC on 20,000 normal and 2,000 off-pattern rows | <= 60 s |
| `stream` | `vaeguard score` on a 1M-row CSV and the same rows as Parquet (an id and 20 Gaussian columns; the small gaussian model of `throughput.py`), rows/s and peak RSS | CSV >= 100,000 rows/s, Parquet >= 150,000 |

Each cell is the median of `--repeats` runs; ratios are per repeat (the two contenders run
back to back), then the median.

Beside the scoring rows, a floor: the fitted network alone (encoder, then decoder at the
posterior mean, in the scorer's own padded blocks), which any score of that network costs at
the least, and for MNIST the samples/s its linear layers would allow at the paired matmul's
FLOP/s.

    python benchmarks/targets.py --threads 1 --markdown benchmarks/results/targets.md
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from _common import REPO_ROOT, log, median, publish, resolve_dir, run_header, set_threads

import torch

from oneclass_benchmarks import load_split
from profile_fit import table_rows
from throughput import CSV_TRAIN_OPTIONS, MatmulProbe, _paired, linear_weights, run_measured, write_csv

PARTS = ("fashion", "mnist", "table", "stream")


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def network_alone_s(det, X: np.ndarray) -> float:
    """Seconds the fitted network alone takes over X (encoder, then decoder at the posterior
    mean) in the scorer's own blocks: what any score of this network costs at the least."""
    from vaeguard.scoring import _blocks

    scorer = det.scorer()
    model = scorer.model
    blocks = [block for block, _ in _blocks(model, scorer.prepare(X), scorer.rows)]  # padded, as scoring pads

    def run() -> None:
        with torch.inference_mode():
            for block in blocks:
                model.decode(model.encode(block)[0])

    run()  # warm-up
    return _timed(run)[1]


def bench_fashion(data_dir: Path, cls: int, repeats: int) -> dict:
    from pyod.models.vae import VAE as PyodVAE

    from vaeguard import VAEAnomalyDetector

    X, X_test, labels = load_split(data_dir, "fashion", str(cls))
    out = {"class": cls, "n_train": len(X), "n_test": len(X_test), "vaeguard": {"fit_s": [], "score_s": []},
           "pyod_vae": {"fit_s": [], "score_s": []}}
    for rep in range(repeats):
        det, t = _timed(lambda: VAEAnomalyDetector(random_state=0, input_shape=(1, 28, 28)).fit(X))
        out["vaeguard"]["fit_s"].append(t)
        peer, t = _timed(lambda: PyodVAE(verbose=0, random_state=0).fit(X))
        out["pyod_vae"]["fit_s"].append(t)
        log(f"fashion fit {rep + 1}/{repeats}: vaeguard {out['vaeguard']['fit_s'][-1]:.1f} s, PyOD VAE {t:.1f} s")
    det.score_samples(X_test[:256]), peer.decision_function(X_test[:256])  # warm-up
    out["vaeguard"]["network_s"] = []
    for _ in range(repeats):
        ours, t = _timed(lambda: -det.score_samples(X_test))
        out["vaeguard"]["score_s"].append(t)
        out["vaeguard"]["network_s"].append(network_alone_s(det, X_test))
        theirs, t = _timed(lambda: peer.decision_function(X_test))
        out["pyod_vae"]["score_s"].append(t)
    out["vaeguard"].update(auroc=float(roc_auc_score(labels, ours)), epochs=det.n_epochs_,
                           model=f"{det.config_.architecture}, {det.likelihood_}, {det.score_type_}")
    out["pyod_vae"]["auroc"] = float(roc_auc_score(labels, theirs))
    for side in ("vaeguard", "pyod_vae"):
        o = out[side]
        o.update(median_fit_s=median(o["fit_s"]), samples_s=len(X_test) / median(o["score_s"]))
    out["vaeguard"]["network_samples_s"] = len(X_test) / median(out["vaeguard"]["network_s"])
    out["fit_ratio"] = median([a / b for a, b in zip(out["vaeguard"]["fit_s"], out["pyod_vae"]["fit_s"])])
    out["score_ratio"] = median([b / a for a, b in zip(out["vaeguard"]["score_s"], out["pyod_vae"]["score_s"])])
    return out


def _mnist(mnist_dir: Path, split: str) -> np.ndarray:
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(mnist_dir / f"{prefix}-images-idx3-ubyte.gz") as fh:
        return np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / 255.0


def bench_mnist(mnist_dir: Path, repeats: int, train_rows: int, probe: MatmulProbe, batch_size: int | None = None) -> dict:
    from vaeguard import VAEAnomalyDetector
    from vaeguard.model import VAE
    from vaeguard.training import TrainConfig, train_vae

    X = _mnist(mnist_dir, "train")[:train_rows]
    X_test = _mnist(mnist_dir, "test")
    det = VAEAnomalyDetector(random_state=0, epochs=1).fit(X[:2000])
    cfg = TrainConfig(epochs=2, batch_size=batch_size or det.batch_size, learning_rate=det.learning_rate)
    weights = linear_weights(det.model_)
    train_ratios, train_flop_s, score_s, score_ratios, network_s, cap = [], [], [], [], [], []
    det.anomaly_score(X_test[:256])
    for rep in range(repeats):
        history, matmul = _paired(probe, lambda: train_vae(VAE(det.config_), X, None, cfg, seed=rep, device=torch.device("cpu")))
        flop_s = 6.0 * weights * len(X) / median(history["epoch_seconds"])
        train_flop_s.append(flop_s)
        train_ratios.append(flop_s / matmul)
        seconds, matmul = _paired(probe, lambda: _timed(lambda: det.anomaly_score(X_test))[1])
        score_s.append(seconds)
        score_ratios.append(2.0 * weights * len(X_test) / seconds / matmul)
        cap.append(matmul / (2.0 * weights))  # samples/s if every linear layer ran at the matmul's rate
        network_s.append(network_alone_s(det, X_test))
    return {"model": f"{det.config_.architecture} {list(det.config_.hidden_dims)}, {det.likelihood_}, {det.score_type_}",
            "linear_weights": weights, "train_rows": len(X), "train_flop_s": train_flop_s, "matmul_ratio": train_ratios,
            "median_train_flop_s": median(train_flop_s), "median_matmul_ratio": median(train_ratios),
            "score_s": score_s, "samples_s": len(X_test) / median(score_s), "score_matmul_ratio": median(score_ratios),
            "network_s": network_s, "network_samples_s": len(X_test) / median(network_s), "matmul_cap_samples_s": median(cap),
            "block_rows": det.scorer().rows, "n_test": len(X_test), "batch_size": cfg.batch_size}


def bench_table(repeats: int, rows: int) -> dict:
    from vaeguard import VAEAnomalyDetector

    X = table_rows(rows)
    X_test = np.concatenate([table_rows(20_000, seed=2), table_rows(2_000, seed=3, anomalous=True)])
    labels = np.r_[np.zeros(20_000), np.ones(2_000)]
    fit_s = []
    for rep in range(repeats):
        det, t = _timed(lambda: VAEAnomalyDetector(random_state=0).fit(X))
        fit_s.append(t)
        log(f"table fit {rep + 1}/{repeats}: {t:.1f} s, {det.n_epochs_} epochs")
    auroc = float(roc_auc_score(labels, det.score_samples(X_test) * -1))
    return {"rows": rows, "fit_s": fit_s, "median_fit_s": median(fit_s), "epochs": det.n_epochs_, "auroc": auroc,
            "model": f"{det.config_.architecture}, {det.likelihood_}, {det.score_type_}"}


def bench_stream(work_dir: Path, rows: int, repeats: int, cli: list[str]) -> dict:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    work_dir.mkdir(parents=True, exist_ok=True)
    train_csv, csv, parquet, model = (work_dir / n for n in ("train.csv", "data.csv", "data.parquet", "model.vgm"))
    write_csv(train_csv, rows=20_000, seed=1)
    write_csv(csv, rows=rows, seed=2)
    pq.write_table(pacsv.read_csv(csv), parquet, row_group_size=100_000)
    run_measured([*cli, "-q", "train", str(train_csv), "-o", str(model), "--id-column", "id", "--epochs", "10",
                  *CSV_TRAIN_OPTIONS], work_dir / "train.log")
    out = {"rows": rows}
    for name, path, suffix in (("csv", csv, ".csv"), ("parquet", parquet, ".parquet")):
        runs = [run_measured([*cli, "-q", "score", str(model), str(path), "-o", str(work_dir / f"scores{i}{suffix}")],
                             work_dir / "score.log") for i in range(repeats)]
        wall = [r["wall_s"] for r in runs]
        out[name] = {"wall_s": wall, "rows_s": rows / median(wall), "peak_rss_mb": [r["peak_rss_mb"] for r in runs]}
        log(f"{name}: {', '.join(f'{w:.1f}' for w in wall)} s")
    for p in work_dir.iterdir():
        p.unlink()
    return out


def render(r: dict) -> str:
    lines = [f"One thread each ({r['settings']['repeats']} repeats, medians; ratios per repeat, then the median). "
             f"Machine: {r['machine']['usable_cpus']} usable CPUs, load average {r['machine']['load_average_1m_5m_15m']} at start.", "",
             "| target | measured | peer / limit (same run) | ratio | met |", "| --- | --- | --- | ---: | --- |"]
    if "fashion" in r:
        f = r["fashion"]
        v, p = f["vaeguard"], f["pyod_vae"]
        lines.append(f"| Fashion class {f['class']} fit <= PyOD VAE's ({v['model']}, {v['epochs']} epochs) | {v['median_fit_s']:.1f} s "
                     f"(AUROC {v['auroc']:.4f}) | PyOD VAE {p['median_fit_s']:.1f} s (AUROC {p['auroc']:.4f}) | {f['fit_ratio']:.2f}x time | {f['fit_ratio'] <= 1} |")
        lines.append(f"| Fashion scoring >= PyOD VAE's ({f['n_test']:,} images) | {v['samples_s']:,.0f}/s | {p['samples_s']:,.0f}/s | "
                     f"{f['score_ratio']:.2f}x speed | {f['score_ratio'] >= 1} |")
        if "network_samples_s" in v:  # runs before it was measured have no such field
            lines.append(f"| (floor) Fashion: the network alone, encoder and decoder in the scoring blocks | {v['network_samples_s']:,.0f}/s | "
                         f"{p['samples_s']:,.0f}/s | {v['network_samples_s'] / p['samples_s']:.2f}x speed | - |")
    if "mnist" in r:
        m = r["mnist"]
        batch = f", batch {m['batch_size']}" if "batch_size" in m else ""
        lines.append(f"| MNIST MLP training >= 0.5x matmul ({m['model']}, {m['linear_weights']:,} weights{batch}) | "
                     f"{m['median_train_flop_s'] / 1e9:.1f} GFLOP/s | matmul (paired) | {m['median_matmul_ratio']:.3f}x | {m['median_matmul_ratio'] >= 0.5} |")
        lines.append(f"| MNIST MLP scoring >= 100,000 samples/s | {m['samples_s']:,.0f}/s | 100,000/s | {m['samples_s'] / 1e5:.2f}x | {m['samples_s'] >= 1e5} |")
        if "network_samples_s" in m:
            lines.append(f"| (floor) MNIST: the network alone in {m['block_rows']}-row blocks; every linear layer at the paired matmul's rate | "
                         f"{m['network_samples_s']:,.0f}/s | {m['matmul_cap_samples_s']:,.0f}/s | {m['network_samples_s'] / 1e5:.2f}x of 100,000 | - |")
    if "table" in r:
        t = r["table"]
        lines.append(f"| {t['rows']:,}-row, 10-column table: default fit <= 60 s ({t['model']}, {t['epochs']} epochs; AUROC {t['auroc']:.4f}) | "
                     f"{t['median_fit_s']:.1f} s ({', '.join(f'{x:.1f}' for x in t['fit_s'])}) | 60 s | {t['median_fit_s'] / 60:.2f}x | {t['median_fit_s'] <= 60} |")
    if "stream" in r:
        s = r["stream"]
        for name, limit in (("csv", 100_000), ("parquet", 150_000)):
            c = s[name]
            lines.append(f"| streaming {name.upper()} >= {limit:,} rows/s ({s['rows']:,} rows, peak RSS {max(c['peak_rss_mb']):.0f} MB) | "
                         f"{c['rows_s']:,.0f}/s ({', '.join(f'{x:.1f}' for x in c['wall_s'])} s) | {limit:,}/s | {c['rows_s'] / limit:.2f}x | {c['rows_s'] >= limit} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fashion-class", type=int, default=0)
    parser.add_argument("--mnist-train-rows", type=int, default=20_000)
    parser.add_argument("--mnist-batch-size", type=int, default=None,
                        help="training batch of the MNIST rows (default: the detector's); another is not the target's default")
    parser.add_argument("--table-rows", type=int, default=200_000)
    parser.add_argument("--stream-rows", type=int, default=1_000_000)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--mnist-dir", default=None)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/vaeguard-targets"))
    parser.add_argument("--out", default="benchmarks/results/targets.json")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    parts = args.parts.split(",")
    data_dir = resolve_dir(args.data_dir, "VAEGUARD_DATA_DIR", REPO_ROOT.parent / "shared" / "data")
    mnist_dir = resolve_dir(args.mnist_dir, "VAEGUARD_MNIST_DIR", REPO_ROOT.parent / "shared" / "data" / "mnist")
    results = run_header("targets") | {"settings": vars(args) | {"work_dir": str(args.work_dir)}}
    if "mnist" in parts:
        results["mnist"] = bench_mnist(mnist_dir, args.repeats, args.mnist_train_rows, MatmulProbe(1024, 10, torch.device("cpu")),
                                       args.mnist_batch_size)
    if "fashion" in parts:
        results["fashion"] = bench_fashion(data_dir, args.fashion_class, args.repeats)
    if "table" in parts:
        results["table"] = bench_table(args.repeats, args.table_rows)
    if "stream" in parts:
        import shlex
        import sys

        results["stream"] = bench_stream(args.work_dir, args.stream_rows, args.repeats, shlex.split(f"{shlex.quote(sys.executable)} -m vaeguard"))
    publish(results, render(results), args.out, args.markdown)


if __name__ == "__main__":
    main()
