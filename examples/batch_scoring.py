"""Use 3: batch scoring of a CSV file and of an image folder, from Python and from the CLI.

Writes demo data into a temporary folder (or --workdir): a CSV of sensor readings with an id
column, where 5% of the new rows break the normal relation between the columns, and a folder
of PNG digits (scikit-learn's embedded 8x8 digits: 0-4 normal, 5-9 anomalous). For each, a
detector is trained from Python and saved; the same files are then scored from Python
(`vaeguard.bulk.score_file`, `score_frame`) and with `vaeguard score` on the command line,
which must write byte-identical score files.

Run: python examples/batch_scoring.py [--workdir DIR] [--quick]
"""

import argparse
import filecmp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from vaeguard import VAEAnomalyDetector
from vaeguard.bulk import score_file, score_frame
from vaeguard.sources import read_training_data

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--workdir", type=Path, help="keep the demo data and outputs here (default: a temporary folder)")
parser.add_argument("--quick", action="store_true", help="fewer epochs (the test suite uses it)")
args = parser.parse_args()
start = time.perf_counter()
epochs = 10 if args.quick else 60
cli = [sys.executable, "-m", "vaeguard", "--quiet"]


def sensor_rows(n: int, rng: np.random.Generator, prefix: str) -> pd.DataFrame:
    """Flow, pressure and power follow two hidden factors; temperatures add noise around them."""
    a, b = rng.normal(size=(2, n))
    frame = pd.DataFrame({
        "flow": 120 + 15 * a, "pressure": 3.0 + 0.4 * a + 0.2 * b, "power": 40 + 5 * a - 3 * b,
        "temp_in": 20 + 2 * b, "temp_out": 25 + 2 * b + 1.5 * a,
    })
    frame += rng.normal(scale=0.05, size=frame.shape) * frame.std().to_numpy()
    frame.insert(0, "id", [f"{prefix}{i:05d}" for i in range(n)])
    return frame


def run(workdir: Path) -> None:
    rng = np.random.default_rng(0)
    # ------------------------------------------------------------------ a CSV file
    sensor_rows(3000, rng, "train").to_csv(workdir / "normal.csv", index=False)
    new = sensor_rows(1000, rng, "new")
    broken = rng.choice(len(new), 50, replace=False)
    new.loc[broken, "power"] += 20.0  # power no longer matches flow and pressure
    new.to_csv(workdir / "new.csv", index=False)

    training = read_training_data(workdir / "normal.csv", id_column="id")
    detector = VAEAnomalyDetector(hidden_dims=(64, 32), latent_dim=2, epochs=epochs, random_state=0)
    detector.fit(training.X, input_spec=training.input_spec).save(workdir / "sensors.vgm")
    summary = score_file(detector, workdir / "new.csv", workdir / "scores-python.csv")
    subprocess.run([*cli, "score", workdir / "sensors.vgm", workdir / "new.csv", "-o", workdir / "scores-cli.csv"],
                   check=True, stdout=subprocess.DEVNULL)
    same = filecmp.cmp(workdir / "scores-python.csv", workdir / "scores-cli.csv", shallow=False)
    frame = score_frame(detector, new.iloc[:5])  # a DataFrame in, a DataFrame out (any engine)
    truth = np.isin(np.arange(len(new)), broken)
    scored = pd.read_csv(workdir / "scores-python.csv")
    caught = scored["is_anomaly"].to_numpy(bool)
    print(f"CSV: scored {summary.n_scored} rows, flagged {summary.n_anomalies}; caught {caught[truth].sum()}/{truth.sum()} "
          f"broken rows, top feature of those: {scored.loc[truth, 'top_1'].mode()[0]!r}; CLI file identical: {same}; "
          f"score_frame columns {list(frame.columns)}")

    # ------------------------------------------------------------------ an image folder
    digits = load_digits()
    for folder, rows in (("train", np.flatnonzero(digits.target < 5)[:600]), ("test", np.arange(1200, 1797))):
        for i in rows:
            sub = workdir / "digits" / folder / ("normal" if digits.target[i] < 5 else "anomaly")
            sub.mkdir(parents=True, exist_ok=True)
            Image.fromarray((digits.images[i] * 255 / 16).round().astype(np.uint8)).save(sub / f"{i:04d}.png")
    images = read_training_data(workdir / "digits" / "train")
    detector = VAEAnomalyDetector(epochs=epochs, fpr=0.05, random_state=0)
    detector.fit(images.X, input_spec=images.input_spec).save(workdir / "digits.vgm")
    summary = score_file(detector, workdir / "digits" / "test", workdir / "images-python.csv")
    subprocess.run([*cli, "score", workdir / "digits.vgm", workdir / "digits" / "test", "-o", workdir / "images-cli.csv"],
                   check=True, stdout=subprocess.DEVNULL)
    same = filecmp.cmp(workdir / "images-python.csv", workdir / "images-cli.csv", shallow=False)
    scored = pd.read_csv(workdir / "images-python.csv")
    is_anomaly = scored["path"].str.startswith("anomaly").to_numpy(int)
    print(f"images: scored {summary.n_scored} PNGs, flagged {summary.n_anomalies}; AUROC {roc_auc_score(is_anomaly, scored['score']):.3f} "
          f"(normal/ vs anomaly/); CLI file identical: {same} ({time.perf_counter() - start:.0f} s)")


if args.workdir is not None:
    args.workdir.mkdir(parents=True, exist_ok=True)
    run(args.workdir)
else:
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp))
