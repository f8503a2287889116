"""Beyond one machine: Parquet scoring, the Dask and Spark engines, out-of-core training.

Parts (all by default; pick some with --parts):
  parquet  `vaeguard score` on the same rows as CSV and as Parquet (>= --gb each), in a
           subprocess: rows/s and peak resident memory
  engines  `vaeguard score --engine dask|spark` with 1 and 2 workers on that Parquet file,
           and each engine's start-up cost (the same command on a 1,000-row file)
  train    `vaeguard train --out-of-core` peak memory on Parquet files of --train-mb sizes,
           against an in-memory `vaeguard train` on the smallest, and the AUROC of both
           models on the same held-out rows

Every command runs through a small launcher that reports its wall time and peak RSS (see
throughput.run_measured). Data: an id column and 20 float columns, a rank-4 linear pattern
plus noise (anomalies: two columns shifted), written with a fixed seed.

Run from the repository root:  python benchmarks/bigdata.py --threads 1 [--quick]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from _common import finish, fmt, log, markdown_table, median, run_header, set_threads, write_json, write_text

import pyarrow as pa
import pyarrow.parquet as pq

from throughput import run_measured

N_FEATURES = 20
TRAIN_OPTIONS = ["--likelihood", "gaussian", "--hidden-dims", "64,32", "--latent-dim", "8", "--seed", "0", "--device", "cpu"]
ROW_GROUP = 100_000


def make_rows(n: int, rng: np.random.Generator, anomalous: bool = False) -> np.ndarray:
    W = np.random.default_rng(12345).normal(size=(4, N_FEATURES))
    X = rng.normal(size=(n, 4)) @ W + 0.1 * rng.normal(size=(n, N_FEATURES))
    if anomalous:
        X[:, :2] += np.array([0.5, -0.5])  # off the pattern by 5 noise sd: hard after one epoch
    return X


def write_parquet(path: Path, *, min_bytes: int, seed: int, anomalous_share: float = 0.0) -> dict:
    """Row groups of ROW_GROUP rows until the file reaches min_bytes."""
    rng = np.random.default_rng(seed)
    names = ["id", *[f"x{i}" for i in range(N_FEATURES)]]
    written = 0
    tmp = path.with_name(path.name + ".part")
    with pq.ParquetWriter(tmp, pa.schema([("id", pa.int64()), *[(n, pa.float64()) for n in names[1:]]])) as writer:
        while True:
            X = make_rows(ROW_GROUP, rng)
            if anomalous_share:
                k = int(ROW_GROUP * anomalous_share)
                X[:k] = make_rows(k, rng, anomalous=True)
            columns = [pa.array(np.arange(written, written + ROW_GROUP))] + [pa.array(X[:, j]) for j in range(N_FEATURES)]
            writer.write_table(pa.Table.from_arrays(columns, names=names))
            written += ROW_GROUP
            if tmp.stat().st_size >= min_bytes:
                break
    os.replace(tmp, path)
    return {"path": str(path), "rows": written, "bytes": path.stat().st_size}


def write_csv_copy(parquet: Path, csv_path: Path) -> dict:
    """The same rows as CSV (full float precision, as pandas writes them)."""
    with open(csv_path, "w", newline="") as fh:
        header = True
        for batch in pq.ParquetFile(parquet).iter_batches(batch_size=ROW_GROUP):
            batch.to_pandas().to_csv(fh, header=header, index=False)
            header = False
    return {"path": str(csv_path), "rows": pq.ParquetFile(parquet).metadata.num_rows, "bytes": csv_path.stat().st_size}


def dataset_rows(path: Path) -> int:
    if path.is_dir():
        return sum(pq.ParquetFile(p).metadata.num_rows for p in path.rglob("*.parquet"))
    if path.suffix == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as fh:
        return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 22), b"")) - 1


def repeated(cmd: list[str], work: Path, repeats: int) -> dict:
    """`cmd` run `repeats` times: median wall time and peak RSS, and each run's peak.

    Peak memory of one command varies by tens of MB from run to run (allocator state), as much
    as the file size moves it, so the tables give medians.
    """
    measured = [run_measured(cmd, work / "run.log") for _ in range(repeats)]
    return dict(measured[0], wall_s=median([m["wall_s"] for m in measured]),
                peak_rss_mb=median([m["peak_rss_mb"] for m in measured]),
                peak_rss_mb_runs=[m["peak_rss_mb"] for m in measured])


def scored(cli, model, data: dict, out: Path, work: Path, extra=(), label="", repeats: int = 1) -> dict:
    cmd = [*cli, "score", str(model), data["path"], "-o", str(out), "--on-bad-row", "skip", *extra]
    log(f"{label}, {repeats} time(s): " + shlex.join(cmd))
    run = repeated(cmd, work, repeats)
    n = dataset_rows(out)
    if n != data["rows"]:
        raise RuntimeError(f"{out} has {n} rows, expected {data['rows']}")
    run.update(label=label, rows=data["rows"], bytes=data["bytes"], rows_s=data["rows"] / run["wall_s"])
    return run


def bench_parquet(work: Path, cli, gb: float, repeats: int, results: dict) -> None:
    big = work / "big.parquet"
    if not big.exists():
        log(f"writing {big} (>= {gb:g} GB) ...")
        write_parquet(big, min_bytes=int(gb * 1e9), seed=2)
    data_pq = {"path": str(big), "rows": pq.ParquetFile(big).metadata.num_rows, "bytes": big.stat().st_size}
    big_csv = work / "big.csv"
    if not big_csv.exists():
        log(f"writing {big_csv} ...")
        write_csv_copy(big, big_csv)
    data_csv = {"path": str(big_csv), "rows": data_pq["rows"], "bytes": big_csv.stat().st_size}
    train = work / "train.parquet"
    if not train.exists():
        write_parquet(train, min_bytes=1, seed=1)  # one row group: 100,000 rows
    model = work / "model.vgm"
    log("training the scoring model")
    results["train_model"] = run_measured([*cli, "train", str(train), "-o", str(model), "--id-column", "id", "--epochs", "5", *TRAIN_OPTIONS], work / "run.log")
    tiny_path = work / "tiny.parquet"
    pq.write_table(pq.read_table(big).slice(0, 1000), tiny_path)
    tiny = {"path": str(tiny_path), "rows": 1000, "bytes": tiny_path.stat().st_size}
    results["startup"] = scored(cli, model, tiny, work / "s_tiny.parquet", work, ("--device", "cpu"), "start-up: 1,000 rows", repeats)
    results["files"] = {"parquet": data_pq, "csv": data_csv}
    runs = []
    for label, data, out in (("CSV -> CSV", data_csv, work / "s.csv"), ("Parquet -> Parquet", data_pq, work / "s.parquet")):
        runs.append(scored(cli, model, data, out, work, ("--device", "cpu"), label, repeats))
        out.unlink()
    results["parquet"] = runs


def bench_engines(work: Path, cli, workers: list[int], results: dict) -> None:
    model = work / "model.vgm"
    big = {"path": str(work / "big.parquet"), "rows": pq.ParquetFile(work / "big.parquet").metadata.num_rows, "bytes": (work / "big.parquet").stat().st_size}
    tiny_path = work / "tiny.parquet"
    tiny = {"path": str(tiny_path), "rows": 1000, "bytes": tiny_path.stat().st_size}
    runs = []
    for engine in ("dask", "spark"):
        for n in workers:
            extra = ["--engine", engine, "--device", "cpu", *(["--workers", str(n)] if engine == "dask" else ["--master", f"local[{n}]"])]
            start = scored(cli, model, tiny, work / "out_tiny", work, extra, f"{engine} {n} worker(s), 1,000 rows (start-up)")
            run = scored(cli, model, big, work / "out_big", work, extra, f"{engine} {n} worker(s)")
            run["startup_s"] = start["wall_s"]
            run["rows_s_after_startup"] = big["rows"] / max(run["wall_s"] - start["wall_s"], 1e-9)
            runs.append(run)
            import shutil

            shutil.rmtree(work / "out_big", ignore_errors=True)
            shutil.rmtree(work / "out_tiny", ignore_errors=True)
    results["engines"] = runs


def bench_train(work: Path, cli, sizes_mb: list[int], epochs: int, repeats: int, results: dict) -> None:
    runs = []
    test = work / "test.parquet"
    write_parquet(test, min_bytes=1, seed=9, anomalous_share=0.5)
    for mb in sizes_mb:
        path = work / f"train_{mb}mb.parquet"
        if not path.exists():
            log(f"writing {path}")
            write_parquet(path, min_bytes=mb * 10**6, seed=100 + mb)
        rows = pq.ParquetFile(path).metadata.num_rows
        modes = [("out-of-core", ["--out-of-core"])] + ([("in memory", [])] if mb == min(sizes_mb) else [])
        for mode, flag in modes:
            model = work / f"m_{mb}_{mode[:2]}.vgm"
            cmd = [*cli, "train", str(path), "-o", str(model), "--id-column", "id", "--epochs", str(epochs), *flag, *TRAIN_OPTIONS]
            log(f"train {mode} {mb} MB, {repeats} time(s): " + shlex.join(cmd))
            run = repeated(cmd, work, repeats)
            run.update(mode=mode, mb=path.stat().st_size / 1e6, rows=rows, auroc=auroc(model, test))
            runs.append(run)
    results["train"] = runs


def auroc(model: Path, test: Path) -> float:
    from sklearn.metrics import roc_auc_score

    import vaeguard
    from vaeguard.bulk import score_frame

    frame = pq.read_table(test).to_pandas()
    y = np.r_[np.ones(int(len(frame) * 0.5)), np.zeros(len(frame) - int(len(frame) * 0.5))]
    scores = score_frame(vaeguard.load(model, device="cpu"), frame)["score"].to_numpy()
    return float(roc_auc_score(y, scores))


def tables(results: dict) -> str:
    parts = []
    if "parquet" in results:
        files = results["files"]
        rows = [[r["label"], fmt(r["bytes"] / 1e6), f"{r['rows']:,}", fmt(r["wall_s"]), f"{r['rows_s']:,.0f}", fmt(r["peak_rss_mb"]),
                 " / ".join(f"{m:.0f}" for m in r.get("peak_rss_mb_runs", [r["peak_rss_mb"]]))] for r in results["parquet"]]
        parts.append(f"### Local scoring, CSV vs Parquet (same {files['parquet']['rows']:,} rows; medians of the repeats; start-up: 1,000 rows in {fmt(results['startup']['wall_s'])} s, {fmt(results['startup']['peak_rss_mb'])} MB)\n\n"
                     + markdown_table(["run", "input MB", "rows", "wall s", "rows/s", "peak RSS MB", "each run"], rows))
    if "engines" in results:
        rows = [[r["label"], f"{r['rows']:,}", fmt(r["startup_s"]), fmt(r["wall_s"]), f"{r['rows_s']:,.0f}", f"{r['rows_s_after_startup']:,.0f}", fmt(r["peak_rss_mb"])] for r in results["engines"]]
        parts.append("### Dask and Spark engines (Parquet in, Parquet dataset out)\n\n"
                     + markdown_table(["run", "rows", "start-up s (1,000 rows)", "wall s", "rows/s", "rows/s after start-up", "peak RSS MB (largest process)"], rows))
    if "train" in results:
        rows = [[r["mode"], fmt(r["mb"]), f"{r['rows']:,}", fmt(r["wall_s"]), fmt(r["peak_rss_mb"]),
                 " / ".join(f"{m:.0f}" for m in r["peak_rss_mb_runs"]), f"{r['auroc']:.4f}"] for r in results["train"]]
        parts.append("### Training: out-of-core vs in memory (Parquet input; medians of the repeats)\n\n"
                     + markdown_table(["mode", "input MB", "rows", "wall s", "peak RSS MB", "each run", "AUROC (held-out, 50% shifted)"], rows))
    return "\n\n".join(parts) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="parquet,engines,train")
    parser.add_argument("--gb", type=float, default=1.0, help="size of the Parquet file to score")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--train-mb", default="100,500,2000")
    parser.add_argument("--train-epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each local scoring and training command; the tables give median wall time and peak memory")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/vaeguard-bigdata"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bigdata.json"))
    parser.add_argument("--markdown", type=Path, default=Path("benchmarks/results/bigdata.md"))
    args = parser.parse_args(argv)
    if args.quick:
        args.gb, args.train_mb = 0.02, "10,20"
    set_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "vaeguard", "-q"]
    results = run_header("bigdata")
    parts = args.parts.split(",")
    start = time.perf_counter()
    if "parquet" in parts or "engines" in parts:
        bench_parquet(args.work_dir, cli, args.gb, args.repeats if "parquet" in parts else 1, results)
    if "engines" in parts:
        bench_engines(args.work_dir, cli, [int(w) for w in args.workers.split(",")], results)
    if "train" in parts:
        bench_train(args.work_dir, cli, [int(s) for s in args.train_mb.split(",")], args.train_epochs, args.repeats, results)
    results["total_s"] = time.perf_counter() - start
    write_json(args.out, finish(results))
    text = tables(results)
    write_text(args.markdown, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
