"""Which default thread count: a vaeguard command timed under each setting, on an idle and a busy machine.

"Busy" is what a user's shared machine is: other processes keeping cores occupied. This
script makes it so itself, with `--busy N` pure-Python spinning processes started beside the
command (none for the idle rows), and times the command (default `vaeguard -q digits`) with
`--threads 1`, `--threads CORES` (what torch does by default) and `--threads auto` (vaeguard's
default). Each cell is the median of `--repeats` runs; the ratio column divides by the
one-thread median of the same load, measured in the same run.

    python benchmarks/threads.py --repeats 3 --markdown benchmarks/results/threads.md
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from _common import finish, publish, run_header

SPIN = "import os\nos.nice(0)\nwhile True:\n    pass\n"


def _time(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed:\n{done.stderr}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", default="vaeguard -q digits", help="vaeguard command to time (an -o folder is added)")
    parser.add_argument("--busy", type=int, default=1, help="spinning processes for the busy rows (default 1: one core of two taken)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/threads.json")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    settings = ["1", str(cores), "auto"]
    results = run_header("threads") | {"settings": {"command": args.command, "busy": args.busy, "repeats": args.repeats}, "cells": []}
    lines = [
        f"`{args.command}`, median of {args.repeats} runs (seconds); ratio = median / the one-thread median under the same load",
        "",
        "| load | --threads | median s | runs | ratio to 1 thread |",
        "| --- | --- | --- | --- | --- |",
    ]
    base = [sys.executable, "-m", "vaeguard"] + shlex.split(args.command)[1:]
    for load in (0, args.busy):
        spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(load)]
        try:
            time.sleep(1.0 if load else 0.0)
            medians = {}
            for setting in settings:
                with tempfile.TemporaryDirectory() as tmp:
                    runs = [_time([*base, "--threads", setting, "-o", f"{tmp}/r{i}"]) for i in range(args.repeats)]
                medians[setting] = statistics.median(runs)
                results["cells"].append({"busy_processes": load, "threads": setting, "runs_s": runs, "median_s": medians[setting]})
                print(f"busy={load} threads={setting}: {', '.join(f'{r:.1f}' for r in runs)} s", file=sys.stderr, flush=True)
            for setting in settings:
                ratio = medians[setting] / medians["1"]
                runs = next(c["runs_s"] for c in results["cells"] if c["busy_processes"] == load and c["threads"] == setting)
                lines.append(f"| {'idle' if load == 0 else f'{load} busy process(es)'} | {setting} | {medians[setting]:.1f} | "
                             f"{', '.join(f'{r:.1f}' for r in runs)} | {ratio:.2f}x |")
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
    publish(finish(results), "\n".join(lines), args.out, args.markdown)


if __name__ == "__main__":
    main()
