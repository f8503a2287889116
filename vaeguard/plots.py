"""Figures for reports: ROC, precision-recall, score distributions, training curves, images, latents.

Every function builds a `matplotlib.figure.Figure` directly (no pyplot state), so plotting
works without a display and from several threads. Normal samples are always drawn in
NORMAL_COLOR and anomalies in ANOMALY_COLOR.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from .atomic import atomic_write
from .errors import DataError
from .metrics import TARGET_TPR, check_labels_scores

NORMAL_COLOR = "#2c7bb6"
ANOMALY_COLOR = "#d7191c"
THRESHOLD_COLOR = "#222222"
TRAIN_COLOR = "#2c7bb6"
VAL_COLOR = "#fdae61"
DPI = 110


def figure_to_png_bytes(fig: Figure) -> bytes:
    """Render `fig` as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG to `path` atomically; returns the path."""
    data = figure_to_png_bytes(fig)
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def roc_figure(y, scores) -> Figure:
    """ROC curve with its AUROC, the chance diagonal and the operating point at 95% TPR."""
    y, scores = check_labels_scores(y, scores)
    fpr, tpr, _ = roc_curve(y, scores, drop_intermediate=False)
    auroc = roc_auc_score(y, scores)
    at = int(np.flatnonzero(tpr >= TARGET_TPR - 1e-12)[0])
    fig = Figure(figsize=(5.2, 4.8), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="#999999", linewidth=1, label="chance (AUROC 0.5)")
    ax.plot(fpr, tpr, color=ANOMALY_COLOR, linewidth=2, label=f"detector (AUROC {auroc:.3f})")
    ax.plot(fpr[at], tpr[at], "o", color=THRESHOLD_COLOR, markersize=7,
            label=f"FPR {fpr[at]:.3f} at {TARGET_TPR:.0%} TPR")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false-positive rate (normals flagged)",
           ylabel="true-positive rate (anomalies caught)", title="ROC curve")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def pr_figure(y, scores) -> Figure:
    """Precision-recall curve with its average precision and the prevalence (chance) baseline."""
    y, scores = check_labels_scores(y, scores)
    precision, recall, _ = precision_recall_curve(y, scores)
    ap = average_precision_score(y, scores)
    prevalence = y.mean()
    fig = Figure(figsize=(5.2, 4.8), layout="constrained")
    ax = fig.add_subplot()
    ax.axhline(prevalence, linestyle="--", color="#999999", linewidth=1, label=f"chance (prevalence {prevalence:.3f})")
    ax.step(recall, precision, where="post", color=ANOMALY_COLOR, linewidth=2, label=f"detector (AP {ap:.3f})")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="recall (anomalies caught)",
           ylabel="precision (flagged that are anomalies)", title="Precision-recall curve")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return fig


def _group_order(groups: np.ndarray) -> list:
    try:
        return list(np.unique(groups))
    except TypeError:
        return sorted(set(groups.tolist()), key=str)


def score_histogram_figure(y, scores, threshold: float | None = None, groups=None) -> Figure:
    """Score densities of normals and anomalies on common bins, with the threshold.

    The range is the 0.5-99.5 percentile span (widened to show the threshold); scores beyond
    it are counted in the edge bins. With `groups`, a second panel shows each group's scores.
    """
    y, scores = check_labels_scores(y, scores)
    low, high = np.percentile(scores, [0.5, 99.5])
    if threshold is not None:
        low, high = min(low, threshold), max(high, threshold)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    bins = np.linspace(low, high, 51)
    clipped = np.clip(scores, low, high)
    with_groups = groups is not None
    fig = Figure(figsize=(11 if with_groups else 6.4, 4.6), layout="constrained")
    ax = fig.add_subplot(1, 2, 1) if with_groups else fig.add_subplot()
    for flag, name, color in ((0, "normal", NORMAL_COLOR), (1, "anomalous", ANOMALY_COLOR)):
        values = clipped[y == flag]
        ax.hist(values, bins=bins, density=True, histtype="stepfilled", alpha=0.35, color=color)
        ax.hist(values, bins=bins, density=True, histtype="step", linewidth=1.5, color=color, label=f"{name} (n={len(values)})")
    if threshold is not None:
        ax.axvline(threshold, color=THRESHOLD_COLOR, linestyle="--", linewidth=1.5, label=f"threshold {threshold:.4g}")
    ax.set(xlabel="anomaly score (higher = more anomalous)", ylabel="density", title="Anomaly scores")
    ax.grid(alpha=0.3)
    ax.legend()
    if with_groups:
        groups = np.asarray(groups).ravel()
        if groups.shape != y.shape:
            raise DataError(f"groups has {groups.size} values but scores has {y.size}")
        _group_boxes(fig.add_subplot(1, 2, 2), y, scores, groups, threshold, (low, high))
    return fig


def _group_boxes(ax, y: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold, limits) -> None:
    order = _group_order(groups)
    data, colors = [], []
    for group in order:
        member = groups == group
        data.append(scores[member])
        colors.append(ANOMALY_COLOR if y[member].mean() >= 0.5 else NORMAL_COLOR)
    boxes = ax.boxplot(data, orientation="horizontal", patch_artist=True, showfliers=False, widths=0.6)
    for patch, color in zip(boxes["boxes"], colors):
        patch.set(facecolor=color, alpha=0.45, edgecolor=color)
    for median in boxes["medians"]:
        median.set(color=THRESHOLD_COLOR)
    ax.set_yticks(range(1, len(order) + 1), [str(g) for g in order])
    if threshold is not None:
        ax.axvline(threshold, color=THRESHOLD_COLOR, linestyle="--", linewidth=1.5)
    ax.set_xlim(*limits)
    ax.set(xlabel="anomaly score", ylabel="group", title="Scores per group (red = mostly anomalous)")
    ax.invert_yaxis()
    ax.grid(alpha=0.3, axis="x")


def training_curves_figure(history: dict) -> Figure:
    """Negative ELBO, reconstruction and KL per epoch, train and validation, best epoch marked."""
    if not history or not history.get("train_loss"):
        raise DataError("history has no 'train_loss' values to plot")
    val_loss = history.get("val_loss") or []
    best = int(np.argmin(val_loss)) + 1 if len(val_loss) else None
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = (("loss", "negative ELBO"), ("recon", "reconstruction"), ("kl", "KL divergence"))
    for ax, (key, name) in zip(axes, panels):
        for split, color in (("train", TRAIN_COLOR), ("val", VAL_COLOR)):
            values = history.get(f"{split}_{key}") or []
            if len(values):
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, color=color, linewidth=1.8, marker="o" if len(values) <= 30 else None,
                        markersize=3, label="train" if split == "train" else "validation")
        if best is not None:
            ax.axvline(best, color=THRESHOLD_COLOR, linestyle=":", linewidth=1.2, label=f"best validation (epoch {best})")
        ax.set(xlabel="epoch", ylabel=f"{name} per sample", title=name)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Training curves")
    return fig


def _as_images(array, name: str) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (3, 4)):
        raise DataError(f"{name} must have shape (n, H, W) or (n, H, W, C) with C in 1, 3, 4; got {array.shape}")
    return array


def _show(ax, image: np.ndarray, *, cmap: str = "gray", unit_range: bool = True) -> None:
    if image.ndim == 3:
        ax.imshow(np.clip(image, 0.0, 1.0))
    elif unit_range:
        ax.imshow(image, cmap=cmap, vmin=0.0, vmax=1.0)
    else:
        ax.imshow(image, cmap=cmap)
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid_figure(inputs, reconstructions, heatmaps, scores, labels=None) -> Figure:
    """One row per sample, most anomalous first: input | reconstruction | per-pixel score heatmap."""
    inputs = _as_images(inputs, "inputs")
    reconstructions = _as_images(reconstructions, "reconstructions")
    heatmaps = np.asarray(heatmaps, dtype=np.float64)
    if heatmaps.ndim == 4:
        heatmaps = heatmaps.sum(axis=-1)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n = len(inputs)
    if n == 0:
        raise DataError("no images to show")
    for name, other in (("reconstructions", reconstructions), ("heatmaps", heatmaps), ("scores", scores)):
        if len(other) != n:
            raise DataError(f"{name} has {len(other)} entries but inputs has {n}")
    if labels is not None and len(labels) != n:
        raise DataError(f"labels has {len(labels)} entries but inputs has {n}")
    gray_in_unit = inputs.ndim == 3 and inputs.min() >= 0 and inputs.max() <= 1
    order = np.argsort(-scores, kind="stable")
    fig = Figure(figsize=(5.6, 1.8 * n + 0.4), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    for row, i in enumerate(order):
        label = "" if labels is None else f" (label {labels[i]})"
        _show(axes[row, 0], inputs[i], unit_range=gray_in_unit)
        axes[row, 0].set_title(f"#{row + 1}{label}", fontsize=9)
        _show(axes[row, 1], reconstructions[i], unit_range=gray_in_unit)
        axes[row, 1].set_title("reconstruction", fontsize=9)
        _show(axes[row, 2], heatmaps[i], cmap="inferno", unit_range=False)
        axes[row, 2].set_title(f"score {scores[i]:.4g}", fontsize=9)
    fig.suptitle("Most anomalous samples: input | reconstruction | heatmap")
    return fig


LATENT_MAPS = ("pca", "tsne", "umap")


def _require_umap() -> None:
    try:
        import umap  # noqa: F401
    except ImportError:
        raise ValueError(
            "the UMAP latent map needs umap-learn, an optional extra: pip install 'vaeguard[umap]' "
            "(or use pca or tsne)"
        ) from None


def latent_figure(means, labels, method: str = "pca", anomalous_labels=None) -> Figure:
    """2-D map of latent means coloured by label; PCA, t-SNE or UMAP when the latent has more than 2 dims.

    Labels listed in `anomalous_labels` are drawn as crosses and marked "(anomalous)".
    "umap" needs the optional extra: pip install "vaeguard[umap]" (umap-learn).
    """
    if method not in LATENT_MAPS:
        raise ValueError(f"method must be one of {LATENT_MAPS}, got {method!r}")
    if method == "umap":
        _require_umap()
    means = np.asarray(means, dtype=np.float64)
    if means.ndim == 1:
        means = means[:, None]
    labels = np.asarray(labels).ravel()
    if means.ndim != 2 or len(means) < 2:
        raise DataError(f"latent means must have shape (n >= 2, d), got {means.shape}")
    if len(labels) != len(means):
        raise DataError(f"labels has {len(labels)} entries but latent means has {len(means)}")
    if not np.all(np.isfinite(means)):
        raise DataError("latent means hold NaN or infinite values")
    axis_names = ("z1", "z2")
    if means.shape[1] == 1:
        jitter = np.random.default_rng(0).uniform(-0.5, 0.5, len(means))
        points, axis_names = np.c_[means[:, 0], jitter], ("z1", "jitter")
        subtitle = "1-D latent"
    elif means.shape[1] == 2:
        points, subtitle = means, "2-D latent"
    elif method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=0).fit(means)
        points = pca.transform(means)
        share = pca.explained_variance_ratio_.sum()
        axis_names, subtitle = ("PC 1", "PC 2"), f"PCA of {means.shape[1]}-D latent ({share:.0%} of variance)"
    elif method == "umap":
        import umap

        neighbours = int(min(15, len(means) - 1))
        points = umap.UMAP(n_components=2, n_neighbors=max(2, neighbours), random_state=0, n_jobs=1).fit_transform(means)
        axis_names, subtitle = ("UMAP 1", "UMAP 2"), f"UMAP of {means.shape[1]}-D latent"
    else:
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(means) - 1) / 3.0)))
        perplexity = min(perplexity, len(means) - 1.0)
        points = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=0).fit_transform(means)
        axis_names, subtitle = ("t-SNE 1", "t-SNE 2"), f"t-SNE of {means.shape[1]}-D latent"
    anomalous = {str(a) for a in (anomalous_labels if anomalous_labels is not None else [])}
    order = _group_order(labels)
    palette = [tuple(c) for c in colormaps["tab10" if len(order) <= 10 else "tab20"].colors]
    fig = Figure(figsize=(7.2, 5.6), layout="constrained")
    ax = fig.add_subplot()
    for k, label in enumerate(order):
        member = labels == label
        is_anomalous = str(label) in anomalous
        ax.scatter(points[member, 0], points[member, 1], s=10 if is_anomalous else 8, alpha=0.7,
                   marker="x" if is_anomalous else "o", color=palette[k % len(palette)],
                   linewidths=0.9 if is_anomalous else 0,
                   label=f"{label} (anomalous)" if is_anomalous else str(label))
    ax.set(xlabel=axis_names[0], ylabel=axis_names[1], title=f"Latent means: {subtitle}")
    ax.grid(alpha=0.3)
    ax.legend(title="label", loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=2, fontsize=8)
    return fig


# ----------------------------------------------------------------------------- generative side


def rows_as_images(rows, shape) -> np.ndarray:
    """Flat rows of (C, H, W) images as (n, H, W) (one channel) or (n, H, W, C) for display."""
    rows = np.asarray(rows, dtype=np.float64)
    channels, height, width = (int(s) for s in shape)
    if rows.ndim != 2 or rows.shape[1] != channels * height * width:
        raise DataError(f"rows of shape {rows.shape} are not flat {channels}x{height}x{width} images")
    images = rows.reshape(-1, channels, height, width)
    return images[:, 0] if channels == 1 else np.moveaxis(images, 1, -1)


def _montage(rows: list[np.ndarray], ncols: int, pad: int) -> tuple[np.ndarray, int, int]:
    """Images tiled row by row into one array (white gaps of `pad` pixels): one imshow instead of
    one axes per image, which keeps a 64-image grid fast to draw. Returns (canvas, height, width)."""
    height, width = rows[0].shape[1:3]
    channels = rows[0].shape[3:] if rows[0].ndim == 4 else ()
    canvas = np.ones((len(rows) * (height + pad) - pad, ncols * (width + pad) - pad, *channels))
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            top, left = r * (height + pad), c * (width + pad)
            canvas[top : top + height, left : left + width] = np.clip(image, 0.0, 1.0)
    return canvas, height, width


def _montage_figure(rows: list[np.ndarray], ncols: int, title: str, row_labels=None, column_labels=None) -> Figure:
    height, width = rows[0].shape[1:3]
    pad = max(1, round(max(height, width) / 14))
    canvas, height, width = _montage(rows, ncols, pad)
    scale = 0.9 / max(height, width)  # inches per pixel: about 0.9 in per image
    margin = 1.3 if row_labels is not None else 0.2
    fig = Figure(figsize=(canvas.shape[1] * scale + margin, canvas.shape[0] * scale + 0.7), layout="constrained")
    ax = fig.add_subplot()
    if canvas.ndim == 3:
        ax.imshow(canvas, interpolation="nearest")
    else:
        ax.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    centres = lambda n, size: [k * (size + pad) + (size - 1) / 2 for k in range(n)]  # noqa: E731
    ax.set_yticks(centres(len(rows), height), [str(v) for v in row_labels] if row_labels is not None else [])
    if column_labels is not None:
        ax.xaxis.tick_top()
        ax.set_xticks(centres(len(column_labels), width), [str(v) for v in column_labels], fontsize=8)
    else:
        ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.suptitle(title)
    return fig


def sample_grid_figure(images, title: str = "Samples from the prior", ncols: int = 8) -> Figure:
    """A grid of images (n, H, W) or (n, H, W, C) with values in [0, 1], row by row."""
    images = _as_images(images, "images")
    n = len(images)
    if n == 0:
        raise DataError("no images to show")
    ncols = max(1, min(ncols, n))
    rows = [images[k : k + ncols] for k in range(0, n, ncols)]
    return _montage_figure(rows, ncols, title)


def image_strips_figure(strips, row_labels, title: str, column_labels=None) -> Figure:
    """Rows of images, one strip per row (each (steps, H, W[, C]) in [0, 1]), labelled on the left.

    Used for interpolations (columns: the path from one input to another) and latent
    traversals (columns: the values given to one latent dimension).
    """
    strips = [_as_images(s, "strip") for s in strips]
    if not strips:
        raise DataError("no strips to show")
    if len(row_labels) != len(strips):
        raise DataError(f"row_labels has {len(row_labels)} entries but there are {len(strips)} strips")
    if len({s.shape[1:] for s in strips}) != 1:
        raise DataError(f"strips hold images of different shapes: {sorted({s.shape[1:] for s in strips})}")
    return _montage_figure(strips, max(len(s) for s in strips), title, row_labels, column_labels)


def marginals_figure(real, generated, feature_names=None, max_features: int = 12) -> Figure:
    """Per feature, the density of real rows (blue) against rows sampled from the model (orange).

    A table model's counterpart of a sample grid: where the two disagree, the model has not
    learned that feature's distribution. The `max_features` with the largest variance are shown.
    """
    real = np.asarray(real, dtype=np.float64)
    generated = np.asarray(generated, dtype=np.float64)
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise DataError(f"real {real.shape} and generated {generated.shape} must be 2-D with the same columns")
    if len(real) == 0 or len(generated) == 0:
        raise DataError("no rows to compare")
    d = real.shape[1]
    names = [f"x{j}" for j in range(d)] if feature_names is None else [str(c) for c in feature_names]
    if len(names) != d:
        raise DataError(f"feature_names has {len(names)} entries for {d} features")
    shown = np.sort(np.argsort(-real.var(axis=0), kind="stable")[:max_features])
    ncols = min(4, len(shown))
    nrows = -(-len(shown) // ncols)
    fig = Figure(figsize=(2.9 * ncols, 2.2 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, j in zip(axes.flat, shown):
        low, high = np.percentile(np.r_[real[:, j], generated[:, j]], [0.5, 99.5])
        if high <= low:
            low, high = low - 0.5, high + 0.5
        bins = np.linspace(low, high, 31)
        ax.hist(np.clip(real[:, j], low, high), bins=bins, density=True, histtype="stepfilled", alpha=0.35,
                color=NORMAL_COLOR, label=f"real (n={len(real)})")
        ax.hist(np.clip(generated[:, j], low, high), bins=bins, density=True, histtype="step", linewidth=1.6,
                color=VAL_COLOR, label=f"sampled (n={len(generated)})")
        ax.set_title(names[j], fontsize=9)
        ax.set_yticks([])
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Sampled vs real values per feature" + (f" ({len(shown)} of {d} with the largest variance)" if len(shown) < d else ""))
    return fig
