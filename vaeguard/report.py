"""An evaluation report: metrics.json, a self-contained report.html and the PNG plots beside it."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np

from ._version import __version__
from .atomic import atomic_write
from .metrics import evaluate, per_group_auroc
from .plots import (
    figure_to_png_bytes,
    image_grid_figure,
    image_strips_figure,
    latent_figure,
    marginals_figure,
    pr_figure,
    roc_figure,
    sample_grid_figure,
    score_histogram_figure,
    training_curves_figure,
)

N_WORST = 12  # the most anomalous inputs a report shows beside their reconstructions

CAPTIONS = {
    "roc.png": "ROC curve: how many anomalies are caught (up) for how many normals flagged (right); "
    "the closer to the top-left corner the better, the diagonal is guessing.",
    "pr.png": "Precision-recall: of the samples flagged, the share that are anomalies, as more anomalies are "
    "caught; the dashed line is what random flagging achieves.",
    "scores.png": "Score distributions: the less the normal (blue) and anomalous (red) densities overlap, the "
    "better; samples right of the dashed threshold are flagged, and scores beyond the plotted range sit in the edge bins.",
    "training.png": "Training curves per epoch: validation (orange) close to train (blue) means no overfitting; "
    "the dotted line marks the epoch with the lowest validation loss, whose weights were kept.",
    "worst.png": "Most anomalous samples, worst first: each input, its reconstruction, and where the score "
    "comes from (brighter = larger contribution; each heatmap scaled on its own).",
    "latent.png": "Latent means coloured by label (anomalous labels, where known, as crosses): anomalies lying "
    "away from the normal clusters mean the encoder itself tells them apart.",
    "samples.png": "New images decoded from codes drawn from the prior N(0, I) (the decoder mean, no pixel noise): "
    "if they look like the normal data, the model has learned it; blurry, all-alike or meaningless samples warn "
    "of a bad fit whose scores deserve less trust.",
    "interpolations.png": "Spherical interpolation (slerp) in latent space between two inputs (outer columns), from the "
    "reconstruction of one (start) to that of the other (end). Between two normal inputs the path should stay on "
    "plausible normal images; from a normal input to an anomaly (last rows), the end column shows how the model bends "
    "the anomaly towards what it knows.",
    "traversals.png": "Latent traversals: one normal input's code with a single latent dimension set from -3 to +3 "
    "prior standard deviations, for the dimensions the model uses most (largest KL to the prior). Each row shows "
    "what that dimension encodes.",
    "marginals.png": "Per feature, values sampled from the model (orange; drawn from the likelihood, in the units "
    "of the data) against the real normal rows (blue): where the two differ, the model has not learned that feature.",
}
# Figures shown in the section on the latent space and the generative side, in this order.
GENERATIVE_FIGURES = ("latent.png", "samples.png", "interpolations.png", "traversals.png", "marginals.png")
# Every file a report may write into its folder (the CLI refuses a folder where one of these is an input).
REPORT_FILES = ("metrics.json", "report.html", *CAPTIONS)

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1100px; color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
.headline { display: flex; flex-wrap: wrap; gap: 0.8rem; margin: 1rem 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6rem 1rem; min-width: 9rem; background: #fafafa; }
.card .value { font-size: 1.5rem; font-weight: 600; } .card .label { color: #666; font-size: 0.85rem; }
table { border-collapse: collapse; margin: 0.5rem 0; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.7rem; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; margin-top: 0.3rem; }
.muted { color: #777; font-size: 0.85rem; }
"""


def _json_safe(value):
    """Plain JSON types: numpy scalars unwrapped, non-finite floats to None, others as str."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _fmt(value) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return html.escape(f"{value:.4g}")
    return html.escape(str(value))


def _card(label: str, value: str) -> str:
    return f'<div class="card"><div class="value">{value}</div><div class="label">{label}</div></div>'


def _headline(metrics: dict) -> str:
    ci = ""
    if metrics.get("auroc_ci_low") is not None:
        ci = f' <span class="muted">[{metrics["auroc_ci_low"]:.3f}, {metrics["auroc_ci_high"]:.3f}]</span>'
    cards = [
        _card("AUROC (95% bootstrap CI)", f"{metrics['auroc']:.3f}{ci}"),
        _card("AUPRC (average precision)", f"{metrics['auprc']:.3f}"),
        _card("FPR at 95% TPR", f"{metrics['fpr_at_95_tpr']:.3f}"),
        _card("TPR at 1% FPR", f"{metrics['tpr_at_1_fpr']:.3f}"),
        _card("samples (anomalies / normal)", f"{metrics['n_samples']} "
              f'<span class="muted">({metrics["n_anomalies"]} / {metrics["n_normal"]})</span>'),
    ]
    parts = [f'<div class="headline">{"".join(cards)}</div>']
    if "threshold" in metrics:
        parts.append(f'<h2>At the threshold {_fmt(metrics["threshold"])} (score &gt; threshold is flagged)</h2>')
        parts.append('<div class="headline">' + "".join([
            _card("precision", f"{metrics['precision']:.3f}"),
            _card("recall", f"{metrics['recall']:.3f}"),
            _card("F1", f"{metrics['f1']:.3f}"),
            _card("false-positive rate", f"{metrics['fpr']:.3f}"),
        ]) + "</div>")
        parts.append(
            "<table><tr><th></th><th>flagged</th><th>not flagged</th></tr>"
            f'<tr><th>anomaly</th><td class="num">{metrics["tp"]} (TP)</td><td class="num">{metrics["fn"]} (FN)</td></tr>'
            f'<tr><th>normal</th><td class="num">{metrics["fp"]} (FP)</td><td class="num">{metrics["tn"]} (TN)</td></tr>'
            "</table>"
        )
    return "\n".join(parts)


def _summary_table(summary: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in summary.items())
    return f"<h2>Summary</h2><table>{rows}</table>"


def _per_group_table(per_group: dict[str, float]) -> str:
    rows = "".join(
        f'<tr><td>{html.escape(group)}</td><td class="num">{auroc:.3f}</td></tr>'
        for group, auroc in sorted(per_group.items(), key=lambda item: item[1])
    )
    return (
        "<h2>AUROC per anomalous group</h2>"
        '<p class="muted">Each group&rsquo;s anomalies against all normal samples, worst first.</p>'
        f"<table><tr><th>group</th><th>AUROC</th></tr>{rows}</table>"
    )


def _figures(y, scores, threshold, history, images, latent, latent_method, groups) -> dict[str, bytes]:
    """PNG bytes per file name, only for the plots whose inputs were given."""
    figures = {
        "roc.png": roc_figure(y, scores),
        "pr.png": pr_figure(y, scores),
        "scores.png": score_histogram_figure(y, scores, threshold, groups),
    }
    if history and history.get("train_loss"):
        figures["training.png"] = training_curves_figure(history)
    if images is not None:
        figures["worst.png"] = image_grid_figure(
            images["inputs"], images["reconstructions"], images["heatmaps"], images["scores"], images.get("labels")
        )
    if latent is not None:
        anomalous = None
        if groups is not None:
            anomalous = np.unique(np.asarray(groups).ravel()[np.asarray(y).ravel().astype(bool)].astype(str))
        figures["latent.png"] = latent_figure(latent["means"], latent["labels"], latent_method, anomalous)
    return {name: figure_to_png_bytes(fig) for name, fig in figures.items()}


def _generative_figures(generative: dict | None) -> dict[str, bytes]:
    """PNGs of the generative section: samples / interpolations / traversals (images) or marginals (tables)."""
    if not generative:
        return {}
    figures = {}
    if generative.get("samples") is not None:
        figures["samples.png"] = sample_grid_figure(generative["samples"], "Samples from the prior (decoder mean)")
    for key, title in (("interpolations", "Interpolations in latent space (slerp)"), ("traversals", "Latent traversals")):
        part = generative.get(key)
        if part:
            figures[f"{key}.png"] = image_strips_figure(part["strips"], part["labels"], title, part.get("columns"))
    if generative.get("marginals"):
        m = generative["marginals"]
        figures["marginals.png"] = marginals_figure(m["real"], m["samples"], m.get("names"))
    return {name: figure_to_png_bytes(fig) for name, fig in figures.items()}


def _figure_html(name: str, data: bytes) -> str:
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<figure><img src="{uri}" alt="{name}"><figcaption>{html.escape(CAPTIONS[name])}</figcaption></figure>'


def write_report(
    out_dir: str | Path,
    y_true,
    anomaly_scores,
    *,
    threshold: float | None = None,
    history: dict | None = None,
    images: dict | None = None,
    latent: dict | None = None,
    latent_method: str = "pca",
    title: str = "vaeguard report",
    summary: dict | None = None,
    groups=None,
    generative: dict | None = None,
) -> dict:
    """Evaluate the scores and write metrics.json, report.html and the plots into `out_dir`.

    `images` = {"inputs", "reconstructions", "heatmaps", "scores", "labels"} of the most
    anomalous samples; `latent` = {"means", "labels"}; `summary` = name -> scalar shown as a
    table; `groups` = a label per sample for per-group AUROC; `generative` = what the model
    generates, shown beside the latent map: for images {"samples": (n, H, W[, C]) in [0, 1],
    "interpolations" and "traversals": {"strips": [(steps, H, W[, C]), ...], "labels": [...],
    "columns": optional column titles}}, for tables {"marginals": {"real", "samples", "names"}}.
    Returns the metrics dict.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = evaluate(y_true, anomaly_scores, threshold)
    if groups is not None:
        metrics["per_group"] = per_group_auroc(groups, y_true, anomaly_scores)
    pngs = _figures(y_true, anomaly_scores, threshold, history, images, latent, latent_method, groups)
    pngs.update(_generative_figures(generative))

    for name, data in pngs.items():
        with atomic_write(out_dir / name, "wb") as fh:
            fh.write(data)
    document = {**metrics, "summary": summary} if summary is not None else dict(metrics)
    with atomic_write(out_dir / "metrics.json", "w", encoding="utf-8") as fh:
        json.dump(_json_safe(document), fh, indent=2)
        fh.write("\n")

    body = [f"<h1>{html.escape(title)}</h1>", _headline(metrics)]
    if summary:
        body.append(_summary_table(summary))
    if metrics.get("per_group"):
        body.append(_per_group_table(metrics["per_group"]))
    body.append("<h2>Plots</h2>")
    for name, data in pngs.items():
        if name not in GENERATIVE_FIGURES:
            body.append(_figure_html(name, data))
    section = [name for name in GENERATIVE_FIGURES if name in pngs]
    if section:
        body.append('<h2 id="generative">Latent space and what the model generates</h2>')
        body.append(
            '<p class="muted">A VAE is a generative model: what it generates shows what it learned about the '
            "normal data. Check these before trusting the scores.</p>"
        )
        body.extend(_figure_html(name, pngs[name]) for name in section)
    body.append(f'<p class="muted">Written by vaeguard {html.escape(__version__)}; metrics also in metrics.json.</p>')
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    with atomic_write(out_dir / "report.html", "w", encoding="utf-8") as fh:
        fh.write(page)
    return metrics
