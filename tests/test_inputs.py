"""The typed input description: round trips, validation, and what `fit` records."""

import numpy as np
import pandas as pd
import pytest

from vaeguard import DataError, VAEAnomalyDetector
from vaeguard.inputs import ImageInput, TableInput, input_from_dict

FAST = dict(latent_dim=2, hidden_dims=(8,), epochs=1, random_state=0, device="cpu")


def test_round_trips():
    table = TableInput(("x1", "x2"), ("float64", "int64"), "id", "label")
    assert input_from_dict(table.to_dict()) == table
    image = ImageInput((3, 20, 30))
    assert input_from_dict(image.to_dict()) == image
    assert image.n_features == 1800 and table.n_features == 2


@pytest.mark.parametrize(
    "d, message",
    [
        ({"kind": "table", "columns": ["a"]}, "'dtypes' must be a list of strings"),
        ({"kind": "table", "columns": "a", "dtypes": ["int64"]}, "'columns' must be a list of strings"),
        ({"kind": "table", "columns": ["a"], "dtypes": ["int64", "int64"]}, "'dtypes' has 2 entries for 1 columns"),
        ({"kind": "table", "columns": ["a"], "dtypes": ["int64"], "id_column": 3}, "'id_column'"),
        ({"kind": "table", "columns": ["a", "a"], "dtypes": ["int64"] * 2}, "repeats"),
        ({"kind": "images", "shape": [2, 8, 8]}, "1 or 3 channels"),
        ({"kind": "images", "shape": [1, 0, 8]}, "positive integers"),
        ({"kind": "sound"}, "'kind'"),
        ([1, 2], "mapping"),
    ],
)
def test_invalid_descriptions_name_the_field(d, message):
    with pytest.raises(DataError, match=message):
        input_from_dict(d)


def test_fit_records_what_it_read():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    assert VAEAnomalyDetector(**FAST).fit(frame).input_spec_ == TableInput(("a", "b", "c"), ("float64",) * 3)
    assert VAEAnomalyDetector(**FAST).fit(frame.to_numpy()).input_spec_.columns == ("x0", "x1", "x2")
    # rows are images only when declared: square rows in [0, 1] are a table without input_shape
    pixels = rng.random((60, 64))
    assert VAEAnomalyDetector(**FAST).fit(pixels).input_spec_.columns[:2] == ("x0", "x1")
    assert VAEAnomalyDetector(**FAST, input_shape=(1, 8, 8)).fit(pixels).input_spec_ == ImageInput((1, 8, 8))
    given = ImageInput((1, 4, 16))
    assert VAEAnomalyDetector(**FAST).fit(pixels, input_spec=given).input_spec_ == given
    with pytest.raises(DataError, match="3 features but X has 64"):
        VAEAnomalyDetector(**FAST).fit(pixels, input_spec=TableInput(("a", "b", "c"), ("float64",) * 3))


def test_fit_reads_a_csv_file_or_an_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    pd.DataFrame(rng.normal(size=(60, 2)), columns=["u", "v"]).to_csv(tmp_path / "t.csv", index=False)
    assert VAEAnomalyDetector(**FAST).fit(str(tmp_path / "t.csv")).input_spec_.columns == ("u", "v")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(30):
        Image.fromarray((rng.random((6, 10)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    det = VAEAnomalyDetector(**FAST).fit(folder)
    assert det.input_spec_ == ImageInput((1, 6, 10)) and det.n_features_in_ == 60


def test_a_model_read_from_a_csv_knows_its_column_names(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(60, 2)), columns=["u", "v"])
    frame.to_csv(tmp_path / "t.csv", index=False)
    det = VAEAnomalyDetector(**FAST).fit(str(tmp_path / "t.csv"))
    assert det.feature_names_in_.tolist() == ["u", "v"]
    assert det.anomaly_score(frame[["u", "v"]]).shape == (60,)
    with pytest.raises(ValueError, match="feature names"):
        det.anomaly_score(frame[["v", "u"]])  # scikit-learn's check: same names, same order
