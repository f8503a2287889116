import base64
import html
import json
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from matplotlib.figure import Figure

from vaeguard.errors import DataError
from vaeguard.plots import (
    figure_to_png_bytes,
    image_grid_figure,
    latent_figure,
    pr_figure,
    roc_figure,
    save_figure,
    score_histogram_figure,
    training_curves_figure,
)
from vaeguard.report import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, 5, n)
    y = (digits >= 3).astype(int)
    return y, rng.gamma(2.0, 1.0, n) + 2.0 * y, digits


HISTORY = {
    "train_loss": [30.0, 25.0, 22.0, 21.0],
    "train_recon": [28.0, 22.0, 19.0, 18.0],
    "train_kl": [2.0, 3.0, 3.0, 3.0],
    "val_loss": [31.0, 26.0, 24.0, 24.5],
    "val_recon": [29.0, 23.0, 21.0, 21.5],
    "val_kl": [2.0, 3.0, 3.0, 3.0],
    "epoch_seconds": [0.1] * 4,
}


def _images(n=3, channels=None):
    rng = np.random.default_rng(1)
    shape = (n, 8, 8) if channels is None else (n, 8, 8, channels)
    return {
        "inputs": rng.random(shape),
        "reconstructions": rng.random(shape),
        "heatmaps": rng.random((n, 8, 8)),
        "scores": rng.random(n) * 10,
        "labels": np.array(["a", "b<i>", "c"][:n], dtype=object),
    }


def _figures():
    y, scores, digits = _data()
    rng = np.random.default_rng(2)
    images = _images()
    rgb = _images(channels=3)
    return {
        "roc": roc_figure(y, scores),
        "pr": pr_figure(y, scores),
        "hist": score_histogram_figure(y, scores),
        "hist_groups": score_histogram_figure(y, scores, threshold=3.0, groups=digits),
        "training": training_curves_figure(HISTORY),
        "training_no_val": training_curves_figure({k: v for k, v in HISTORY.items() if k.startswith("train")}),
        "grid": image_grid_figure(images["inputs"], images["reconstructions"], images["heatmaps"], images["scores"], images["labels"]),
        "grid_rgb": image_grid_figure(rgb["inputs"], rgb["reconstructions"], rgb["heatmaps"], rgb["scores"]),
        "latent_2d": latent_figure(rng.normal(size=(40, 2)), digits[:40]),
        "latent_1d": latent_figure(rng.normal(size=(40, 1)), digits[:40]),
        "latent_pca": latent_figure(rng.normal(size=(40, 6)), digits[:40], anomalous_labels=[3, 4]),
        "latent_tsne": latent_figure(rng.normal(size=(40, 6)), digits[:40].astype(str), method="tsne"),
    }


def test_every_plot_saves_a_png(tmp_path):
    figures = _figures()
    for name, fig in figures.items():
        assert isinstance(fig, Figure), name
        path = save_figure(fig, tmp_path / "sub" / f"{name}.png")
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        assert len(data) > 1024, name
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == sorted(f"{n}.png" for n in figures)


def test_plots_render_in_threads():
    with ThreadPoolExecutor(max_workers=2) as pool:
        pngs = list(pool.map(lambda seed: figure_to_png_bytes(roc_figure(*_data(seed=seed)[:2])), range(4)))
    assert all(p.startswith(PNG_SIGNATURE) for p in pngs)
    assert pngs[0] != pngs[1]


def test_plot_input_errors():
    y, scores, _ = _data()
    images = _images()
    with pytest.raises(DataError, match="heatmaps has 2 entries but inputs has 3"):
        image_grid_figure(images["inputs"], images["reconstructions"], images["heatmaps"][:2], images["scores"])
    with pytest.raises(DataError, match="inputs must have shape"):
        image_grid_figure(np.zeros((3, 8)), images["reconstructions"], images["heatmaps"], images["scores"])
    with pytest.raises(DataError, match="labels has 3 entries but latent means has 4"):
        latent_figure(np.zeros((4, 2)), [0, 1, 2])
    with pytest.raises(ValueError, match="method must be"):
        latent_figure(np.zeros((4, 3)), [0, 1, 2, 3], method="isomap")
    with pytest.raises(DataError, match="train_loss"):
        training_curves_figure({})
    with pytest.raises(DataError, match="only normal"):
        roc_figure(np.zeros(5), scores[:5])


def _data_uris(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_write_report_full(tmp_path):
    y, scores, digits = _data()
    rng = np.random.default_rng(3)
    title = "<script>alert('x')</script> & report"
    out = tmp_path / "new" / "report"
    metrics = write_report(
        out,
        y,
        scores,
        threshold=np.float32(3.5),
        history=HISTORY,
        images=_images(),
        latent={"means": rng.normal(size=(len(y), 4)), "labels": digits},
        title=title,
        summary={"normal digits": "0,1,2", "training images": np.int64(123), "threshold": None, "<b>key": 1.5},
        groups=digits,
    )
    assert set(metrics["per_group"]) == {"3", "4"}
    assert metrics["tp"] + metrics["fn"] == metrics["n_anomalies"] == int(y.sum())

    saved = json.loads((out / "metrics.json").read_text())
    for key in ("auroc", "auroc_ci_low", "auroc_ci_high", "auprc", "fpr_at_95_tpr", "tpr_at_1_fpr",
                "precision", "recall", "f1", "fpr", "tp", "fp", "tn", "fn", "per_group"):
        assert saved[key] == pytest.approx(metrics[key]), key
    assert saved["summary"] == {"normal digits": "0,1,2", "training images": 123, "threshold": None, "<b>key": 1.5}

    names = ["roc.png", "pr.png", "scores.png", "training.png", "worst.png", "latent.png"]
    for name in names:
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE), name
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in page
    assert html.escape(title) in page
    assert "&lt;b&gt;key" in page
    assert _data_uris(page) == [(out / name).read_bytes() for name in names]
    assert f"{metrics['auroc']:.3f}" in page and f"{metrics['f1']:.3f}" in page
    # per-group table lists the worse-detected group first
    worst, best = sorted(metrics["per_group"], key=metrics["per_group"].get)
    assert page.index(f"<td>{worst}</td>") < page.index(f"<td>{best}</td>")


def test_write_report_minimal(tmp_path):
    y, scores, _ = _data()
    metrics = write_report(tmp_path, y.astype(bool), scores)
    assert "per_group" not in metrics and "threshold" not in metrics
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "pr.png", "report.html", "roc.png", "scores.png"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == pytest.approx(metrics) and "summary" not in saved
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert len(_data_uris(page)) == 3
    assert "vaeguard report" in page
