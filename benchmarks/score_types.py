"""Which score carries the signal: every score type of one fitted model, side by side.

One fit per (case, seed), with the package defaults (or `--params`), then the AUROC of every
score the model can give on the same test rows: `elbo`, `recon`, `kl`, `iwae`, `ratio` (images
with the bernoulli likelihood), the latent distance alone and `fused`. The model is fitted
with score_type="fused" so that it keeps the latent codes the distance needs; score_type only
decides what is stored beside the network, so the network is the default's and each column
equals what that score type gives. This is a diagnostic for the cells where the default loses
(issue #10: a held-out MNIST 9, vertebral), not a comparison with peers.

Cases: `mnist-held-out:D` (normal = the other nine digits, test = the 10,000 test images),
`fashion:C` and `tabular:NAME` (the protocol of oneclass_benchmarks.py).

    python benchmarks/score_types.py --cases tabular:vertebral --seeds 0,1,2,3,4 --threads 1
    python benchmarks/score_types.py --cases mnist-held-out:9 --params '{"epochs": 150}'
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from _common import fmt, log, markdown_table, plain, publish, resolve_dir, run_header, set_threads

from mnist_protocols import DEFAULT_DATA_DIR as MNIST_DIR
from oneclass_benchmarks import DATA_DIR_ENV, DEFAULT_DATA_DIR, load_split
from vaeguard import VAEAnomalyDetector, scoring
from vaeguard.mnist import MNIST_DIR_ENV, load_mnist

import far_scores

SCORES = ("elbo", "recon", "kl", "iwae", "ratio", "latent distance", "fused")
CANDIDATES = ("fused, plain reconstruction NLL", "fused two-sided", "density of states", "complexity-corrected", "fused complexity-corrected")  # far_scores.py, issue #22


def load_case(case: str, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training rows, test rows, test labels 1 = anomaly) for one case."""
    kind, _, name = case.partition(":")
    if kind == "mnist-held-out":
        data_dir = resolve_dir(args.mnist_dir, MNIST_DIR_ENV, MNIST_DIR)
        X_train, y_train = load_mnist("train", data_dir=data_dir, download=False)
        X_test, y_test = load_mnist("test", data_dir=data_dir, download=False)
        return X_train[y_train != int(name)], X_test, (y_test == int(name)).astype(int)
    if kind in ("fashion", "tabular"):
        return load_split(resolve_dir(args.data_dir, DATA_DIR_ENV, DEFAULT_DATA_DIR), kind, name)
    raise SystemExit(f"error: case {case!r}: expected mnist-held-out:DIGIT, fashion:CLASS or tabular:NAME")


def score_table(est: VAEAnomalyDetector, X: np.ndarray) -> dict[str, np.ndarray]:
    """Every score of SCORES the fitted model can give for X (ratio needs a context model)."""
    scorer = est.scorer()
    model, state, Xs = scorer.model, scorer.score_state, scorer.prepare(X)
    out = {}
    for score_type in ("elbo", "recon", "kl", "iwae", "ratio"):
        if score_type != "ratio" or state.context is not None:
            out[score_type] = scoring.anomaly_scores(model, Xs, score_type, scorer.n_importance_samples, scorer.seed, state=state)
    lengths = state.code_length.nats(np.asarray(X, np.float32)) if state.code_length is not None else None
    out["latent distance"] = scoring.fused_parts(model, Xs, state, lengths)[:, 1]
    out["fused"] = scoring.anomaly_scores(model, Xs, "fused", state=state, code_lengths=lengths)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", required=True, help="comma-separated: mnist-held-out:9, fashion:0, tabular:vertebral")
    parser.add_argument("--seeds", default="0", help="comma-separated random_state values (default: 0)")
    parser.add_argument("--params", default="{}", help="JSON keyword arguments for VAEAnomalyDetector (default: the package defaults)")
    parser.add_argument("--data-dir", help=f"folder with fashion-oneclass/ and tabular/ (default: ${DATA_DIR_ENV}, else ../shared/data)")
    parser.add_argument("--mnist-dir", help=f"folder with the MNIST IDX files (default: ${MNIST_DIR_ENV}, else ../shared/data/mnist)")
    parser.add_argument("--candidates", action="store_true", help="also the research scores of far_scores.py (issue #22)")
    parser.add_argument("--stats-dir", help="with --candidates: save each fit's per-row statistics here (validation and test rows, labels)")
    parser.add_argument("--threads", type=int, help="torch and BLAS threads")
    parser.add_argument("--out", default="benchmarks/results/score_types.json")
    parser.add_argument("--markdown", help="also write the table here")
    args = parser.parse_args(argv)
    args.case_list = [c.strip() for c in args.cases.split(",") if c.strip()]
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    args.param_dict = json.loads(args.params)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    results = run_header("score_types")
    results["settings"] = {"cases": args.case_list, "seeds": args.seed_list, "params": args.param_dict}
    results["cases"] = {}
    rows = []
    columns = SCORES + (CANDIDATES if args.candidates else ())
    for case in args.case_list:
        X_train, X_test, labels = load_case(case, args)
        images = {"input_shape": (1, 28, 28)} if case.partition(":")[0] in ("mnist-held-out", "fashion") else {}
        runs = []
        for seed in args.seed_list:
            est = VAEAnomalyDetector(**{**images, **args.param_dict, "score_type": "fused", "random_state": seed})
            start = time.perf_counter()
            est.fit(X_train)
            fit_s = time.perf_counter() - start
            scores = score_table(est, X_test)
            if args.candidates:
                val = far_scores.statistics(est, X_train[far_scores.split_indices(est, len(X_train))[1]])
                test = far_scores.statistics(est, X_test)
                extra = far_scores.Candidates(val, est.score_state_.context is not None).scores(test)
                scores.update({name: extra[name] for name in CANDIDATES})
                if args.stats_dir:
                    np.savez(f"{args.stats_dir}/stats_{case.replace(':', '_')}_{seed}.npz", labels=labels,
                             **{f"validation/{k}": v for k, v in val.items()}, **{f"test/{k}": v for k, v in test.items()})
            aurocs = {name: float(roc_auc_score(labels, s)) for name, s in scores.items()}
            runs.append({"seed": seed, "fit_s": fit_s, "epochs_run": est.n_epochs_, "likelihood": est.likelihood_, "auroc": aurocs})
            log(f"{case} seed {seed}: " + " ".join(f"{k}={v:.4f}" for k, v in aurocs.items()))
        results["cases"][case] = {"n_train": len(X_train), "n_test": len(X_test), "runs": runs}
        cells = []
        for name in columns:
            values = [r["auroc"][name] for r in runs if name in r["auroc"]]
            spread = f" ({fmt(min(values))}-{fmt(max(values))})" if len(values) > 1 else ""
            cells.append(f"{fmt(float(np.mean(values)), 4)}{spread}" if values else "-")
        rows.append([case, *cells, fmt(float(np.median([r["fit_s"] for r in runs])), 1)])
    params = json.dumps(plain(args.param_dict)) if args.param_dict else "package defaults"
    text = (
        f"### AUROC of every score of one fitted model ({params}; seeds {args.seeds}: mean, and range over seeds)\n\n"
        + markdown_table(["case", *columns, "median fit s"], rows)
    )
    publish(results, text, args.out, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
