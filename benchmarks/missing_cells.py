"""Are rows with gaps and complete rows comparable? (issue #21): flagged share by gap count.

vaeguard scores a row with missing cells from the cells present, scaled by d / present (see
the README, "Missing cells"), and one conformal threshold serves every row. This measures how
often held-out normal rows are flagged at the default threshold (fpr=0.01), split by the share
of their cells that are missing, with the blanking protocol of the `missing` suite of
`oneclass_benchmarks.py` (../shared/data/README.md). A share near 1% in every bucket means the
threshold treats rows with and without gaps alike; the AUROC is printed beside it.

    python benchmarks/missing_cells.py --threads 1 --sets wine,vertebral,pima,vowels,letter,cardio
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import roc_auc_score

from _common import REPO_ROOT, fmt, log, markdown_table, publish, resolve_dir, run_header, set_threads
from oneclass_benchmarks import TABULAR_SETS, load_arrays, missing_split

BUCKETS = (("no gap", 0.0, 0.0), ("up to 25%", 1e-9, 0.25), ("25-50%", 0.25 + 1e-9, 0.5), ("over 50%", 0.5 + 1e-9, 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(TABULAR_SETS))
    parser.add_argument("--rates", default="0.1,0.3")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="benchmarks/results/missing_cells.json")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    from vaeguard import VAEAnomalyDetector

    data_dir = resolve_dir(args.data_dir, "VAEGUARD_DATA_DIR", REPO_ROOT.parent / "shared" / "data")
    results = run_header("missing_cells") | {"settings": vars(args), "cells": {}}
    pooled = {(rate, b[0]): [0, 0] for rate in args.rates.split(",") for b in BUCKETS}
    rows = []
    for name in args.sets.split(","):
        x, y = load_arrays(data_dir, "tabular", name)
        for rate in args.rates.split(","):
            log(f"[{name} p={rate}] fitting")
            X_train, X_test, labels = missing_split(x, y, float(rate))
            detector = VAEAnomalyDetector(random_state=0).fit(X_train)
            scores = detector.anomaly_score(X_test)
            flagged = detector.predict(X_test) == -1
            gap_share = np.isnan(X_test).mean(axis=1)
            cell = {"auroc": float(roc_auc_score(labels, scores)), "buckets": {}}
            normal = labels == 0
            for bucket, low, high in BUCKETS:
                inside = normal & (gap_share >= low) & (gap_share <= high)
                cell["buckets"][bucket] = {"normals": int(inside.sum()), "flagged": int(flagged[inside].sum())}
                pooled[(rate, bucket)][0] += int(inside.sum())
                pooled[(rate, bucket)][1] += int(flagged[inside].sum())
            results["cells"][f"{name} p={rate}"] = cell
            shares = [cell["buckets"][b[0]] for b in BUCKETS]
            rows.append([name, rate, fmt(cell["auroc"], 4)] + [
                f"{s['flagged'] / s['normals']:.3f} ({s['normals']})" if s["normals"] else "-" for s in shares
            ])
    for rate in args.rates.split(","):
        shares = [pooled[(rate, b[0])] for b in BUCKETS]
        rows.append(["**pooled**", rate, ""] + [f"{f / n:.3f} ({n})" if n else "-" for n, f in shares])
    results["pooled"] = {f"p={rate} {bucket}": {"normals": n, "flagged": f} for (rate, bucket), (n, f) in pooled.items()}
    header = ["set", "blank share", "AUROC"] + [f"flagged normals, {b[0]} of cells missing (n)" for b in BUCKETS]
    text = "### Held-out normals flagged at the default threshold (fpr=0.01), by share of cells missing\n\n" + markdown_table(header, rows)
    publish(results, text, args.out, args.markdown)


if __name__ == "__main__":
    main()
