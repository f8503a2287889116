"""Do heavy-tailed columns destabilise training? (issue #21)

A network-traffic shaped table: four byte counts around 1,000 (log-normal, correlated) with
spikes of 10^4-10^5 times in 0.05% of cells (capped at 10^8), and four durations. The default
detector is trained with the heavy-tailed columns compressed (vaeguard's default,
vaeguard.scorer.HEAVY_TAIL_RATIO) and without (the rule switched off), on the same rows and
seed. Printed: the largest rise of the training and validation loss between two epochs, and
the AUROC of rows whose byte counts are 8 times the usual (no spike) against normal rows.

    python benchmarks/heavy_tails.py --threads 1
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import roc_auc_score

from _common import fmt, log, markdown_table, publish, run_header, set_threads


def traffic(n: int, seed: int, factor: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    spikes = (rng.random((n, 4)) < 0.0005) * rng.uniform(1e4, 1e5, (n, 4))
    counts = np.minimum(np.round(1000 * factor * np.exp(0.3 * z @ np.random.default_rng(1).normal(size=(2, 4))) * (1 + spikes)), 1e8)
    durations = z @ np.random.default_rng(2).normal(size=(2, 4)) + 0.3 * rng.normal(size=(n, 4))
    return np.hstack([counts, durations])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/heavy_tails.json")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    import vaeguard.scorer as scorer
    from vaeguard import VAEAnomalyDetector

    train = traffic(args.rows, 0)
    test = np.vstack([traffic(2000, 1), traffic(200, 2, factor=8.0)])
    labels = np.r_[np.zeros(2000), np.ones(200)]
    results = run_header("heavy_tails") | {"settings": vars(args), "runs": {}}
    rows = []
    for name, ratio in (("compressed (default)", scorer.HEAVY_TAIL_RATIO), ("not compressed", np.inf)):
        scorer.HEAVY_TAIL_RATIO = ratio
        log(f"[{name}] fitting on {args.rows:,} rows")
        detector = VAEAnomalyDetector(random_state=0).fit(train)
        history = {k: [float(v) for v in values] for k, values in detector.history_.items()}
        run = {
            "compressed_columns": [c for c, t in zip(detector.input_spec_.columns, detector.input_spec_.tails) if t is not None],
            "largest_train_rise": float(np.diff(history["train_loss"]).max()),
            "largest_val_rise": float(np.diff(history["val_loss"]).max()),
            "epochs": detector.n_epochs_,
            "auroc_8x_bytes": float(roc_auc_score(labels, detector.anomaly_score(test))),
            "recall_8x_bytes": float((detector.predict(test[labels == 1]) == -1).mean()),
            "history": history,
        }
        results["runs"][name] = run
        rows.append([name, len(run["compressed_columns"]), run["epochs"], fmt(run["largest_train_rise"], 2),
                     fmt(run["largest_val_rise"], 2), fmt(run["auroc_8x_bytes"], 4), fmt(run["recall_8x_bytes"])])
    header = ["byte columns", "compressed", "epochs", "largest train-loss rise", "largest val-loss rise",
              "AUROC, 8x bytes", "recall @ threshold"]
    text = "### Heavy-tailed columns (issue #21)\n\n" + markdown_table(header, rows) + (
        f"\n\n{args.rows:,} training rows, seed 0, default detector; a rise is the largest increase of the "
        "per-epoch mean loss from one epoch to the next.\n"
    )
    publish(results, text, args.out, args.markdown)


if __name__ == "__main__":
    main()
