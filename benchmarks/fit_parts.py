"""Where a default fit spends its time (issue #23): cProfile of `VAEAnomalyDetector().fit`, by part.

Parts (cumulative seconds of the functions that make them up, so they do not overlap):
input checks (`validate_data`), the training epochs (`training.train_vae_batches`, less the
validation passes inside it), validation (`training.evaluate_loss`), the latent reference codes
of `fused` (`scoring.fit_latent_neighbours`) and the scoring of calibration and training rows
(`Scorer.score_and_explain`); "other" is the rest of `fit`. Cases: a Fashion-MNIST class (the
convolutional model, 4,900 images) and a table. `--epochs` bounds the epochs so a run is short;
the epochs part then scales with the real epoch count.

    python benchmarks/fit_parts.py --threads 1 --epochs 3 --markdown benchmarks/results/fit_parts.md
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np

from _common import REPO_ROOT, finish, publish, resolve_dir, run_header, set_threads

PARTS = {
    "input checks": ("validation.py", "validate_data"),
    "epochs (with validation)": ("training.py", "train_vae_batches"),
    "validation passes": ("training.py", "evaluate_loss"),
    "latent reference codes": ("scoring.py", "fit_latent_neighbours"),
    "scoring calibration and training rows": ("scorer.py", "score_and_explain"),
}


def _cumulative(stats: pstats.Stats, file_end: str, name: str) -> float:
    return sum(v[3] for (f, _, n), v in stats.stats.items() if f.endswith(file_end) and n == name)


def profile_fit(X: np.ndarray, params: dict) -> dict:
    from vaeguard import VAEAnomalyDetector

    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    detector = VAEAnomalyDetector(**params).fit(X)
    profiler.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    parts = {name: _cumulative(stats, *where) for name, where in PARTS.items()}
    parts["epochs (with validation)"] -= parts["validation passes"]
    parts["other"] = total - sum(parts.values())
    return {"total_s": total, "epochs": detector.n_epochs_, "parts_s": parts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="benchmarks/results/fit_parts.json")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    data_dir = resolve_dir(args.data_dir, "VAEGUARD_DATA_DIR", REPO_ROOT.parent / "shared" / "data")
    fashion = np.load(data_dir / "fashion-oneclass" / "fashion0.npz")
    normal = fashion["x"][fashion["y"] == 0].astype(np.float32) / 255.0
    train = normal[np.random.default_rng(0).permutation(len(normal))[: int(0.7 * len(normal))]]
    table = np.load(data_dir / "tabular" / "satellite.npz")["x"]
    cases = {
        f"fashion class 0, conv ({len(train):,} x 784)": (train, {"input_shape": (1, 28, 28)}),
        f"satellite table ({len(table):,} x {table.shape[1]})": (table, {}),
    }
    results = run_header("fit_parts") | {"settings": vars(args), "cases": {}}
    lines = [f"`VAEAnomalyDetector(random_state=0, epochs={args.epochs}).fit`, {args.threads} thread(s), seconds (share of the fit)", ""]
    names = [*PARTS, "other"]
    lines += ["| case | total | " + " | ".join(names) + " |", "| --- | ---: | " + " | ".join("---:" for _ in names) + " |"]
    for name, (X, extra) in cases.items():
        out = profile_fit(X, {"random_state": 0, "epochs": args.epochs, **extra})
        results["cases"][name] = out
        cells = [f"{out['parts_s'][p]:.1f} ({out['parts_s'][p] / out['total_s']:.0%})" for p in names]
        lines.append(f"| {name} | {out['total_s']:.1f} | " + " | ".join(cells) + " |")
    publish(finish(results), "\n".join(lines), args.out, args.markdown)


if __name__ == "__main__":
    main()
