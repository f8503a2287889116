"""What a fitted detector generates, as report sections and files: sample grids, interpolation
strips, latent traversals (image models) and sampled-vs-real marginals (table models).

Built on the estimator's `sample`, `interpolate` and `traverse`; used by the digit jobs'
reports and by `vaeguard sample` / `vaeguard interpolate`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .errors import DataError
from .estimator import VAEAnomalyDetector
from .sources import FrameSource
from .plots import image_strips_figure, rows_as_images, sample_grid_figure, save_figure

TRAVERSAL_VALUES = np.linspace(-3.0, 3.0, 9)


def _label(labels, i: int, fallback: str) -> str:
    return fallback if labels is None else str(np.asarray(labels)[i])


def image_gallery(
    detector: VAEAnomalyDetector,
    shape: tuple[int, int, int],
    normal_rows: np.ndarray,
    anomaly_rows: np.ndarray | None = None,
    *,
    normal_labels=None,
    anomaly_labels=None,
    n_samples: int = 64,
    steps: int = 10,
    n_pairs: int = 3,
    n_traversals: int = 5,
    seed: int = 0,
) -> dict:
    """The `generative` argument of `report.write_report` for an image model.

    Samples from the prior; `n_pairs` slerp strips between two normal inputs (of different
    labels where labels are given) and `n_pairs - 1` from a normal input to an anomaly; and
    traversals of the `n_traversals` most active latent dimensions around one normal input.
    Inputs are picked with a fixed seed, so the same call shows the same images.
    """
    normal_rows = np.asarray(normal_rows)
    if len(normal_rows) < 2:
        raise DataError(f"the gallery needs at least 2 normal inputs, got {len(normal_rows)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(normal_rows))
    pairs: list[tuple[int, int]] = []
    labels = None if normal_labels is None else np.asarray(normal_labels)
    if labels is not None and len(np.unique(labels)) < 2:
        labels = None  # one label: pairs cannot differ in it
    for i in order:
        if len(pairs) == n_pairs:
            break
        used = {k for pair in pairs for k in pair}
        if i in used:
            continue
        seen = {frozenset((labels[a], labels[b])) for a, b in pairs} if labels is not None else set()
        partners = [
            j for j in order
            if j != i and j not in used
            and (labels is None or (labels[j] != labels[i] and frozenset((labels[i], labels[j])) not in seen))
        ]
        if partners:
            pairs.append((int(i), int(partners[0])))
    strips, names = [], []

    def path_with_inputs(x_a, x_b) -> np.ndarray:
        # The inputs frame the path: the reconstructions at its ends show what the model made of them.
        return np.vstack([x_a, detector.interpolate(x_a, x_b, steps=steps), x_b])

    for i, j in pairs:
        strips.append(path_with_inputs(normal_rows[i], normal_rows[j]))
        names.append(f"{_label(labels, i, 'normal')} → {_label(labels, j, 'normal')}")
    if anomaly_rows is not None and len(anomaly_rows):
        anomaly_rows = np.asarray(anomaly_rows)
        picks = np.random.default_rng(seed + 1).permutation(len(anomaly_rows))[: max(1, n_pairs - 1)]
        for k, a in enumerate(picks):
            i = int(order[-1 - k])
            strips.append(path_with_inputs(normal_rows[i], anomaly_rows[a]))
            names.append(f"{_label(labels, i, 'normal')} → {_label(anomaly_labels, int(a), 'anomaly')} (anomaly)")
    base = int(order[0])
    dims = detector.active_dims(normal_rows[order[: min(len(order), 1000)]], k=n_traversals)
    traversals = [detector.traverse(normal_rows[base], int(d), TRAVERSAL_VALUES) for d in dims]
    columns = [f"{v:+.1f}" for v in TRAVERSAL_VALUES]
    return {
        "samples": rows_as_images(np.clip(detector.sample(n_samples), 0, 1), shape),
        "interpolations": {
            "strips": [rows_as_images(np.clip(s, 0, 1), shape) for s in strips],
            "labels": names,
            "columns": ["input", "start"] + [""] * (steps - 2) + ["end", "input"],
        },
        "traversals": {
            "strips": [rows_as_images(np.clip(t, 0, 1), shape) for t in traversals],
            "labels": [f"z{int(d)}" for d in dims],
            "columns": columns,
        },
    }


def table_gallery(detector: VAEAnomalyDetector, real_rows, *, names=None, n_samples: int = 2000, seed: int = 0) -> dict:
    """The `generative` argument of `report.write_report` for a table model: per-feature
    marginals of rows drawn from the model (from the likelihood, in the units of X) against
    the real normal rows."""
    real = np.asarray(real_rows, dtype=np.float64)
    names = table_columns_of(detector) if names is None else list(names)
    return {"marginals": {"real": real, "samples": detector.sample(n_samples, random_state=seed, mean=False), "names": names}}


# What sample and interpolate write, by the model's kind, and the suffixes that say so.
OUTPUTS = {
    "sample": {"images": ("a PNG grid", (".png",)), "table": ("generated rows as CSV", (".csv", ".csv.gz"))},
    "interpolate": {"images": ("a PNG strip", (".png",)), "table": ("the interpolated rows as CSV", (".csv",))},
}


class OutputNameError(DataError):
    """The output's name does not end in a suffix the command writes for this model."""


def check_output_name(command: str, out: str | Path, detector: VAEAnomalyDetector) -> None:
    """OutputNameError unless `out` ends in a suffix that `command` writes for this model."""
    kind = detector.input_spec_.kind
    what, suffixes = OUTPUTS[command][kind]
    name = Path(out).name.lower()
    if not any(name.endswith(s) and len(name) > len(s) for s in suffixes):
        accepted = ", ".join("*" + s for s in suffixes)
        raise OutputNameError(f"{'an image' if kind == 'images' else 'a table'} model writes {what} ({accepted}), got {Path(out).name}")


def image_shape_of(detector: VAEAnomalyDetector) -> tuple[int, int, int] | None:
    """(C, H, W) when the model was trained on images, else None (a table model)."""
    return detector.input_spec_.image_shape


def table_columns_of(detector: VAEAnomalyDetector) -> list[str]:
    """The names of a table model's features, in model order (`column=level` for a categorical column)."""
    return list(detector.input_spec_.feature_names)


def rows_frame(detector: VAEAnomalyDetector, rows: np.ndarray):
    """Generated rows as a DataFrame with the model's column names: integer columns rounded, a
    categorical column as its most likely level (text, as in the training data)."""
    import pandas as pd

    spec = detector.input_spec_
    rows = np.asarray(rows, dtype=np.float64)
    columns = {}
    for name, dtype, levels, start, width in zip(spec.columns, spec.dtypes, spec.levels, spec.starts, spec.widths):
        if levels is not None:
            columns[name] = np.asarray(levels, dtype=object)[rows[:, start : start + width].argmax(axis=1)]
        elif dtype.startswith(("int", "uint")):
            columns[name] = rows[:, start].round().astype("int64")
        else:
            columns[name] = rows[:, start]
    return pd.DataFrame(columns)


def write_samples(detector: VAEAnomalyDetector, out: str | Path, n: int = 64, *, seed: int | None = None, mean: bool = True) -> Path:
    """Image models: a PNG grid of n samples; table models: a CSV of n generated rows with the
    original column names, in the original units. The suffix of `out` must match the kind."""
    out = Path(out)
    check_output_name("sample", out, detector)
    shape = image_shape_of(detector)
    if shape is not None:
        images = rows_as_images(np.clip(detector.sample(n, random_state=seed, mean=mean), 0, 1), shape)
        return save_figure(sample_grid_figure(images, f"{n} samples from the prior ({'decoder mean' if mean else 'drawn from the likelihood'})"), out)
    frame = rows_frame(detector, detector.sample(n, random_state=seed, mean=mean))
    compression = "gzip" if out.suffix.lower() == ".gz" else None
    with atomic_write(out, "wb") as fh:
        frame.to_csv(fh, index=False, compression=compression)
    return out


def write_interpolation(
    detector: VAEAnomalyDetector, x_a, x_b, out: str | Path, *, steps: int = 10, method: str = "slerp",
    labels: tuple[str, str] = ("A", "B"),
) -> Path:
    """Image models: a PNG strip: input A, the decoded path at t = 0 .. 1 (its ends are the
    reconstructions of A and B), input B. Table models: a CSV of the decoded rows (column t,
    then the model's columns in the original units)."""
    out = Path(out)
    check_output_name("interpolate", out, detector)
    shape = image_shape_of(detector)
    rows = detector.interpolate(x_a, x_b, steps=steps, method=method)
    if shape is not None:
        x_a, x_b = (np.asarray(x, dtype=np.float64).reshape(1, -1) for x in (x_a, x_b))
        strip = rows_as_images(np.clip(np.vstack([x_a, rows, x_b]), 0, 1), shape)
        columns = [labels[0]] + [f"t={t:.2f}" for t in np.linspace(0, 1, steps)] + [labels[1]]
        fig = image_strips_figure([strip], [f"{method}"], f"{labels[0]} → {labels[1]} in latent space", columns)
        return save_figure(fig, out)
    frame = rows_frame(detector, rows)
    frame.insert(0, "t", np.linspace(0.0, 1.0, steps))
    with atomic_write(out, "w", encoding="utf-8", newline="") as fh:
        frame.to_csv(fh, index=False)
    return out


def table_rows_by_id(detector: VAEAnomalyDetector, path: str | Path, keys: list[str]) -> list:
    """Rows of a CSV file picked by id (the model's id column) or by 1-based row number (as in
    `vaeguard score` output), as one-row DataFrames of the model's columns."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such CSV file")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    id_column = getattr(detector.input_spec_, "id_column", None)
    columns = table_columns_of(detector)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: column {missing[0]!r} of the model is missing")
    picked = []
    for key in keys:
        if id_column is not None and id_column in frame.columns:
            hits = np.flatnonzero(frame[id_column].to_numpy() == str(key))
            if len(hits) == 0:
                raise DataError(f"{path}: no row with {id_column} = {key!r}")
            index, where = int(hits[0]), f"row with {id_column} = {key!r}"
        else:
            try:
                index = int(key) - 1
            except ValueError:
                raise DataError(f"{path}: {key!r} is not a row number (the model has no id column)") from None
            if not 0 <= index < len(frame):
                raise DataError(f"{path}: row {key} does not exist (the file has {len(frame)} data rows)")
            where = f"row {key}"
        try:
            row = FrameSource(frame.loc[[index], columns]).features(detector.input_spec_)
        except DataError as exc:
            raise DataError(f"{path}: {where}: {str(exc).split(': ', 1)[-1]}") from None
        # by name, as fitted; a categorical model reads its features (one per level) by position
        picked.append(row if detector.input_spec_.groups else pd.DataFrame(row, columns=columns))
    return picked
