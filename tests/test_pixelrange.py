"""The training range of each pixel (#22): an image that inks where no training image did is
unlike every training image, whatever the network makes of it.

The failure it fixes: trained on MNIST digits, the default `ratio` score ranked Fashion-MNIST
garments (AUROC 0.979) below what a pixel-support check reaches, because the context model
discounts their texture; garments ink the frame's border, which no digit does.
"""

import math

import numpy as np
import pytest
import torch

import vaeguard.defaults as defaults
from vaeguard import load
from vaeguard.estimator import VAEAnomalyDetector
from vaeguard.pixelrange import PixelRange


def stroke_images(n, seed, side=16):
    """Near-binary strokes well inside the frame: the outer 3 pixels are never inked."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, side, side), dtype=np.float32)
    for image in out:
        r0, c0 = rng.integers(3, side - 8, 2)
        length = rng.integers(3, 6)
        if rng.random() < 0.5:
            image[r0 : r0 + length, c0 : c0 + 2] = 1.0
        else:
            image[r0 : r0 + 2, c0 : c0 + length] = 1.0
    return out.reshape(n, -1)


def test_each_pixel_outside_its_training_range_costs_log_n_plus_one():
    train = torch.tensor([[0.0, 0.2, 0.5], [0.0, 0.4, 0.5], [0.0, 0.3, 0.5]])
    pixel_range = PixelRange(3).fit(train)
    cost = math.log(len(train) + 1)
    x = torch.tensor([[0.0, 0.2, 0.5], [0.1, 0.4, 0.5], [0.1, 0.1, 0.6], [-0.1, 0.3, 0.4]])
    np.testing.assert_allclose(pixel_range.nll(x).numpy(), [0, cost, 3 * cost, 2 * cost], rtol=1e-6)
    np.testing.assert_allclose(pixel_range.feature_nll(x).sum(dim=1).numpy(), pixel_range.nll(x).numpy(), rtol=1e-6)
    assert (pixel_range.nll(train) == 0).all()  # the training rows themselves never pay


def test_missing_pixels_are_left_out_of_the_range_and_never_cost():
    train = torch.tensor([[0.0, float("nan"), 0.5], [1.0, float("nan"), float("nan")]])
    pixel_range = PixelRange(3).fit(train)
    assert torch.isfinite(pixel_range.low).all() and torch.isfinite(pixel_range.high).all()  # the model file needs finite tensors
    assert pixel_range.low[2] == 0.5 and pixel_range.high[2] == 0.5
    x = torch.tensor([[0.5, 123.0, float("nan")]])
    assert pixel_range.nll(x).item() == 0  # never observed: any value fits; missing now: no evidence
    with pytest.raises(ValueError, match="at least one training row"):
        PixelRange(3).fit(torch.zeros(0, 3))


def test_the_network_is_unchanged_and_the_score_rises_by_the_cost_exactly(monkeypatch):
    train, normals = stroke_images(600, 0), stroke_images(100, 1)
    framed = normals.copy().reshape(-1, 16, 16)
    framed[:, 0, :] = 1.0  # a line along the top edge, where no training image has ink
    framed = framed.reshape(len(normals), -1)

    def fit():
        return VAEAnomalyDetector(random_state=0, input_shape=(1, 16, 16), epochs=3, score_type="recon").fit(train)

    det = fit()
    assert det.score_state_.pixel_range is not None  # every image model holds it
    monkeypatch.setattr(defaults, "has_pixel_range", lambda spec: False)
    plain = fit()
    assert plain.score_state_.pixel_range is None
    for a, b in zip(det.model_.state_dict().values(), plain.model_.state_dict().values()):
        assert torch.equal(a, b)  # the range is a scoring part: training is untouched

    n_fit = len(train) - round(det.calibration_fraction * len(train)) - round(det.validation_fraction * len(train))
    assert float(det.score_state_.pixel_range.cost) == pytest.approx(math.log(n_fit + 1))
    outside = det.score_state_.pixel_range.nll(torch.as_tensor(framed)).numpy() / math.log(n_fit + 1)
    assert (outside >= 16).all()  # at least the edge's 16 pixels
    raised = plain.score_samples(framed) - det.score_samples(framed)  # score_samples: higher is more normal
    np.testing.assert_allclose(raised, outside * math.log(n_fit + 1), rtol=1e-5)
    # normals inside the range score as before, and the framed images are flagged at the threshold
    inside = (det.score_state_.pixel_range.nll(torch.as_tensor(normals)) == 0).numpy()
    assert inside.mean() > 0.9
    np.testing.assert_allclose(det.score_samples(normals[inside]), plain.score_samples(normals[inside]), rtol=1e-6)
    assert (det.predict(framed) == -1).all()


# A model file keeps the range and scores identically: tests/test_code_length.py, with the code length.


def test_tables_hold_no_pixel_range_and_a_file_claiming_one_is_refused(tmp_path):
    from vaeguard.errors import ModelFileError
    from vaeguard.modelfile import read_model_file, write_model_file

    det = VAEAnomalyDetector(random_state=0, epochs=1).fit(np.random.default_rng(0).normal(size=(100, 4)))
    assert det.score_state_.pixel_range is None
    description, arrays = read_model_file(det.save(tmp_path / "m.vgm"))
    description["model_config"]["pixel_range"] = True
    broken = write_model_file(tmp_path / "broken.vgm", description, arrays)
    with pytest.raises(ModelFileError, match=r"'model_config\.pixel_range' is true but the model is not an image model"):
        load(broken)


def test_a_model_file_written_before_the_pixel_range_scores_without_it(tmp_path):
    """Files from before #22's range have no `pixel_range` field and no range tensors."""
    from vaeguard.modelfile import read_model_file, write_model_file

    train, test = stroke_images(300, 0), stroke_images(20, 1)
    det = VAEAnomalyDetector(random_state=0, input_shape=(1, 16, 16), epochs=2, score_type="recon").fit(train)
    description, arrays = read_model_file(det.save(tmp_path / "m.vgm"))
    del description["model_config"]["pixel_range"]
    arrays = {k: v for k, v in arrays.items() if not k.startswith("model.pixel_range.")}
    old = load(write_model_file(tmp_path / "old.vgm", description, arrays))
    assert old.score_state_.pixel_range is None
    det.score_state_.pixel_range = None  # the same network, scored the way the old file says
    np.testing.assert_array_equal(old.score_samples(test), det.score_samples(test))
