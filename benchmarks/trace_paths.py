"""How many vaeguard modules and functions one scoring call passes through (issue #20's trace).

Two paths, each traced with `sys.setprofile` after everything is loaded and warmed up:
- `csv`: `vaeguard score MODEL one-row.csv -o out.csv` (the CLI's `score` command, in-process);
- `estimator`: `detector.score_samples(X)` on a fitted `VAEAnomalyDetector`.
Prints, per path, the vaeguard modules and functions entered (each counted once) and writes JSON.

    python benchmarks/trace_paths.py --out benchmarks/results/trace_paths.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from _common import REPO_ROOT, finish, publish, run_header


def traced(call) -> dict[str, list[str]]:
    """{module: [function, ...]} of the vaeguard code entered while `call()` runs."""
    seen: dict[str, set[str]] = defaultdict(set)
    package = str(REPO_ROOT / "vaeguard")

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(package):
            module = Path(frame.f_code.co_filename).relative_to(REPO_ROOT).with_suffix("").as_posix().replace("/", ".")
            seen[module].add(frame.f_code.co_qualname)

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return {m: sorted(f) for m, f in sorted(seen.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/trace_paths.json")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()

    import pandas as pd
    import torch
    from typer.testing import CliRunner

    from vaeguard import VAEAnomalyDetector
    from vaeguard.cli import app

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(400, 5)), columns=[f"x{i}" for i in range(5)])
    detector = VAEAnomalyDetector(epochs=2, random_state=0).fit(frame)
    tmp = Path(tempfile.mkdtemp())
    detector.save(tmp / "model.vgm")
    frame.iloc[:1].to_csv(tmp / "one.csv", index=False)
    runner = CliRunner()
    score = ["-q", "score", str(tmp / "model.vgm"), str(tmp / "one.csv"), "-o", str(tmp / "out.csv")]
    assert runner.invoke(app, score).exit_code == 0  # warm-up: imports and caches
    detector.score_samples(frame.iloc[:1])
    paths = {
        "csv": traced(lambda: runner.invoke(app, score)),
        "estimator": traced(lambda: detector.score_samples(frame.iloc[:1])),
    }
    results = run_header("trace_paths") | {"paths": paths}
    lines = []
    for name, modules in paths.items():
        n_functions = sum(len(f) for f in modules.values())
        lines += [f"## {name}: {len(modules)} modules, {n_functions} functions", ""]
        lines += [f"- `{m}`: {', '.join(f)}" for m, f in modules.items()] + [""]
    publish(finish(results), "\n".join(lines), args.out, args.markdown)


if __name__ == "__main__":
    main()
