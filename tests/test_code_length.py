"""The image code length of the fused score (#22): a blank frame is not normal for a model of
textured images just because it is easy to predict.

The failure it fixes: trained on grey-level images, the fused score ranked near-black constant
frames (a lens cap, a dead camera) among the normal images, because the model reconstructs a
blank image better than most of its own data, and the encoder puts it among the training codes.
"""

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import vaeguard.defaults as defaults
from vaeguard.complexity import ImageCodeLength
from vaeguard.estimator import VAEAnomalyDetector


def blob_images(n, seed, side=16):
    """Two to four grey Gaussian blobs on a dark background, plus a little sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    out = np.zeros((n, side, side))
    for image in out:
        for _ in range(rng.integers(2, 5)):
            cy, cx = rng.uniform(3, side - 3, 2)
            radius, level = rng.uniform(1.5, 4), rng.uniform(0.4, 1)
            image += level * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
        image += 0.03 * rng.normal(size=(side, side))
    return np.clip(out, 0, 1).reshape(n, -1)


def dark_frames(n, seed, side=16):
    """Constant frames between black and 6% grey."""
    levels = np.random.default_rng(seed).uniform(0, 0.06, n)
    return np.repeat(levels[:, None], side * side, axis=1)


def test_the_code_length_counts_texture_in_nats_whatever_the_grey_scale():
    coder = ImageCodeLength((1, 16, 16)).fit(np.array([[0.0, 1.0]]))  # the 8-bit step
    flat = np.full((3, 256), [[0.0], [0.3], [1.0]])
    textured = blob_images(5, 0)
    noise = np.random.default_rng(0).random((5, 256))
    # a flat image: one nat a pixel (a white one also pays for its first pixel, coded against 0)
    np.testing.assert_allclose(coder.nats(flat[:2]), 256.0)
    assert coder.nats(flat).max() < coder.nats(textured).min()
    assert coder.nats(noise).min() > coder.nats(textured).max()
    # but no more than its pixels stored raw as 8-bit levels, a compressor's fallback: uniform
    # noise would cost about 6.1 nats a pixel under the Laplace, and look simpler than it is
    np.testing.assert_allclose(coder.nats(noise), 256 * np.log(256))
    assert (coder.nats(2 * noise) > 256 * np.log(256)).all()  # 512 levels: no 8-bit code fits
    # a read-only array (memory-mapped, say) is read as it is, without torch's warning
    frozen = textured.astype(np.float32)
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(coder.nats(frozen), coder.nats(textured.astype(np.float32)))
    # the same images in 0-255 grey levels, with the step fitted on them, cost the same
    grey = ImageCodeLength((1, 16, 16)).fit(np.array([[0.0, 255.0]]))
    np.testing.assert_allclose(grey.nats(textured * 255), coder.nats(textured), rtol=1e-6)  # the step is a float32
    # colour images: each channel coded on its own, the lengths summed
    rgb = ImageCodeLength((3, 16, 16)).fit(np.array([[0.0, 1.0]]))
    np.testing.assert_allclose(rgb.nats(np.tile(textured, 3)), 3 * coder.nats(textured), rtol=1e-12)
    # a missing pixel leaves its residuals out instead of making the length NaN
    gappy = textured.copy()
    gappy[:, 40] = np.nan
    assert np.isfinite(coder.nats(gappy)).all()
    np.testing.assert_allclose(coder.nats(gappy), coder.nats(textured), rtol=0.05)


def test_dark_frames_are_flagged_with_the_code_length_and_missed_without_it(monkeypatch):
    train, normals, dark = blob_images(1500, 0), blob_images(300, 1), dark_frames(300, 2)
    labels = np.r_[np.zeros(len(normals)), np.ones(len(dark))]

    def fit():
        return VAEAnomalyDetector(random_state=0, input_shape=(1, 16, 16), epochs=20).fit(train)

    det = fit()
    assert det.score_state_.code_length is not None  # the default for grey images of 16 px a side
    auroc = roc_auc_score(labels, -np.r_[det.score_samples(normals), det.score_samples(dark)])
    recall = (det.predict(dark) == -1).mean()
    assert auroc > 0.99 and recall > 0.95, (auroc, recall)
    assert (det.predict(normals) == -1).mean() < 0.03  # the threshold still holds for normals

    monkeypatch.setattr(defaults, "has_code_length", lambda *args: False)
    plain = fit()
    assert plain.score_state_.code_length is None
    plain_auroc = roc_auc_score(labels, -np.r_[plain.score_samples(normals), plain.score_samples(dark)])
    assert plain_auroc < 0.8 and (plain.predict(dark) == -1).mean() < 0.2, plain_auroc  # the failure it fixes


def test_small_images_and_other_scores_hold_no_code_length():
    small = blob_images(60, 0, side=8)
    assert VAEAnomalyDetector(random_state=0, input_shape=(1, 8, 8), epochs=1).fit(small).score_state_.code_length is None
    big = blob_images(60, 0)
    assert VAEAnomalyDetector(random_state=0, input_shape=(1, 16, 16), epochs=1, score_type="elbo").fit(big).score_state_.code_length is None


def test_a_model_file_keeps_the_image_score_state_and_scores_identically(tmp_path):
    """The code length and the pixel range (tests/test_pixelrange.py) travel in the file."""
    from vaeguard import load
    from vaeguard.cli import app
    from typer.testing import CliRunner

    lit_edge = blob_images(5, 3)
    lit_edge[:, :16] = 1.0  # the top row, brighter than any training image's
    train, test = blob_images(200, 0), np.r_[blob_images(20, 1), dark_frames(5, 2), lit_edge]
    det = VAEAnomalyDetector(random_state=0, input_shape=(1, 16, 16), epochs=2).fit(train)
    path = det.save(tmp_path / "m.vgm")
    loaded = load(path)
    assert loaded.score_state_.code_length is not None and loaded.score_state_.pixel_range is not None
    assert (loaded.score_state_.pixel_range.nll(torch.as_tensor(loaded.scorer().prepare(lit_edge), dtype=torch.float32)) > 0).all()
    np.testing.assert_array_equal(loaded.score_samples(test), det.score_samples(test))
    one_by_one = np.concatenate([det.score_samples(test[i : i + 1]) for i in range(len(test))])
    np.testing.assert_array_equal(one_by_one, det.score_samples(test))
    result = CliRunner().invoke(app, ["info", str(path)])
    assert result.exit_code == 0
    assert "less each image's code length, plus log(n + 1) nats per pixel outside its training range" in result.output


@pytest.mark.parametrize("kind", ["table", "elbo"])
def test_a_model_file_claiming_a_code_length_it_cannot_use_is_refused(tmp_path, kind):
    from vaeguard import load
    from vaeguard.errors import ModelFileError
    from vaeguard.modelfile import read_model_file, write_model_file

    if kind == "table":
        det = VAEAnomalyDetector(random_state=0, epochs=1).fit(np.random.default_rng(0).normal(size=(100, 4)))
    else:
        det = VAEAnomalyDetector(random_state=0, epochs=1, input_shape=(1, 16, 16), score_type="elbo").fit(blob_images(60, 0))
    description, arrays = read_model_file(det.save(tmp_path / "m.vgm"))
    description["model_config"]["code_length"] = True
    broken = write_model_file(tmp_path / "broken.vgm", description, arrays)
    with pytest.raises(ModelFileError, match=r"'model_config\.code_length' is true but the model is not an image model with the fused score"):
        load(broken)
