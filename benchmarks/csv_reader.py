"""CSV reader benchmark: vaeguard.tabular.iter_table_chunks now vs at an earlier commit.

Streams the same files through the reader of this checkout and through the reader of
`--baseline` (vaeguard/tabular.py at that git ref, loaded beside the package), interleaved,
and reports the median rows/s of each and their ratio, by wall clock and by this process's
CPU time (steadier on a shared machine). Only the reader is timed (bytes to float32 feature
chunks with row numbers), no model. Files (written once to --work-dir):
  numeric  an id column and 20 standard-normal columns (as throughput.py's csv part)
  quoted   the same with every id quoted ("r123"), the quote-handling path

Run from the repository root:  python benchmarks/csv_reader.py --baseline <ref> [--rows N]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import REPO_ROOT, finish, fmt, log, markdown_table, median, run_header, write_json, write_text

from vaeguard.inputs import TableInput
from vaeguard.tabular import iter_table_chunks

COLUMNS = 20


def write_file(path: Path, rows: int, quoted: bool, seed: int = 2, chunk: int = 100_000) -> None:
    """`rows` rows of an id and COLUMNS standard-normal floats (%.6g), ids quoted or not."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as fh:
        fh.write(",".join(["id", *[f"x{i}" for i in range(COLUMNS)]]) + "\n")
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            values = rng.standard_normal((n, COLUMNS))
            ids = [f'"r{i}"' if quoted else str(i) for i in range(start, start + n)]
            body = np.char.mod("%.6g", values)
            fh.writelines(f"{i},{','.join(r)}\n" for i, r in zip(ids, body))


def baseline_reader(ref: str):
    """iter_table_chunks from vaeguard/tabular.py at git `ref`, as module vaeguard._tabular_baseline."""
    source = subprocess.run(["git", "show", f"{ref}:vaeguard/tabular.py"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "tabular_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("vaeguard._tabular_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.iter_table_chunks


def read_all(reader, path: Path, schema: TableInput) -> int:
    return sum(len(chunk.X) for chunk in reader(path, schema))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git ref whose vaeguard/tabular.py is the baseline")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per file (default 1,000,000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each reader per file (default 3)")
    parser.add_argument("--files", default="numeric,quoted", help="which files (default numeric,quoted)")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "vaeguard-bench")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "csv_reader.json")
    parser.add_argument("--markdown", type=Path, default=None, help="also save the Markdown table to this file")
    args = parser.parse_args(argv)

    results = run_header("csv_reader")
    results.update(baseline=args.baseline, rows=args.rows, repeats=args.repeats, files={})
    readers = {"baseline": baseline_reader(args.baseline), "current": iter_table_chunks}
    # Readers only look at the columns and the id column, so older ones take a TableInput too.
    schema = TableInput([f"x{i}" for i in range(COLUMNS)], ["float64"] * COLUMNS, "id")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    table = []
    for name in args.files.split(","):
        path = args.work_dir / f"csv_reader_{name}_{args.rows}.csv"
        if not path.is_file():
            log(f"writing {path}")
            write_file(path, args.rows, quoted=name == "quoted")
        wall: dict[str, list[float]] = {k: [] for k in readers}
        cpu: dict[str, list[float]] = {k: [] for k in readers}
        for repeat in range(args.repeats):
            for label, reader in readers.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                n = read_all(reader, path, schema)
                wall[label].append(time.perf_counter() - start)
                cpu[label].append(time.process_time() - start_cpu)
                if n != args.rows:
                    raise RuntimeError(f"{label} read {n} rows of {path}, expected {args.rows}")
                log(f"{name} {label} #{repeat + 1}: {wall[label][-1]:.2f} s, cpu {cpu[label][-1]:.2f} s")
        entry = {"path": str(path), "bytes": path.stat().st_size, "wall_s": wall, "cpu_s": cpu}
        row = [name, f"{path.stat().st_size / 1e6:,.0f}"]
        for clock, times in (("wall", wall), ("cpu", cpu)):
            rates = {k: args.rows / median(v) for k, v in times.items()}
            speedup = median([b / c for b, c in zip(times["baseline"], times["current"])])
            entry[f"rows_s_{clock}"], entry[f"speedup_{clock}_paired_median"] = rates, speedup
            row += [fmt(rates["baseline"]), fmt(rates["current"]), f"{speedup:.2f}x"]
        results["files"][name] = entry
        table.append(row)
    text = markdown_table(["file", "MB", *[f"{c}: {h}" for c in ("wall", "cpu") for h in
                                           (f"rows/s at {args.baseline}", "rows/s now", "speed-up")]], table)
    print(text)
    write_json(args.out, finish(results))
    if args.markdown:
        write_text(args.markdown, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
