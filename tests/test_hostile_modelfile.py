"""Hostile model files and generative sizes (issue 24), generated with hypothesis.

Each property writes a saved model's header or tensor bytes back with one kind of damage:
numbers beyond float or 64-bit range anywhere in the description, mistyped fields, tensor
dtypes the network does not use, altered tensor bytes. The contract: a one-line
ModelFileError naming the file and the field or tensor (CLI: `error: ...`, exit 1), or a model
that loads and scores. `det.sample` and `det.interpolate` refuse sizes over the CLI's caps
before allocating. `test_X` runs 20 examples, `test_X_slow` 250 (`-m slow`).
"""

from __future__ import annotations

import functools
import json
import random
import re
import struct
import tempfile
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import assume
from hypothesis import strategies as st

import vaeguard
from test_hostile import FAST_DETECTOR, fast_and_slow, invoke, one_line_error, peak_rss, session_dir
from vaeguard import limits
from vaeguard.errors import DataError, ModelFileError
from vaeguard.limits import MAX_INTERPOLATION_STEPS, MAX_SAMPLES
from vaeguard.modelfile import _FIELDS, _FIELDS_IF_PRESENT, _RULE_FIELDS

SENTINEL = "@@hostile@@"
DIGEST_MISMATCH = "tensor data does not match its digest: the file was altered or damaged"


@functools.lru_cache(maxsize=1)
def _model() -> tuple[Path, np.ndarray]:
    """A tiny gaussian table model (4 features, fused score), saved once, and its data."""
    X = np.random.default_rng(0).normal(size=(60, 4))
    path = session_dir("vaeguard-hostile-model-") / "m.vgm"
    vaeguard.VAEAnomalyDetector(**FAST_DETECTOR).fit(X).save(path)
    return path, X


def read_header(path: Path) -> tuple[dict, bytes]:
    """The safetensors header (tensor entries and __metadata__) and the tensor data bytes."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write_header(path: Path, header: dict, data: bytes) -> None:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads its header to 8 bytes
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def field_name(keys: tuple) -> str:
    """('history', 'train_loss', 3) -> "history.train_loss[3]", as the errors name fields."""
    name = ""
    for key in keys:
        name += f"[{key}]" if isinstance(key, int) else (f".{key}" if name else key)
    return name


def numeric_leaves(value, keys: tuple = ()) -> list[tuple]:
    """Key paths of every number (not bool) under value."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in numeric_leaves(v, (*keys, k))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in numeric_leaves(v, (*keys, i))]
    return [keys] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def put(description: dict, keys: tuple, value) -> None:
    holder = description
    for key in keys[:-1]:
        holder = holder[key]
    holder[keys[-1]] = value


def with_description(source: Path, out: Path, description: dict, raw_value: str | None = None, **header_metadata) -> None:
    """Write source's tensors with `description`; SENTINEL in it becomes raw_value verbatim."""
    header, data = read_header(source)
    text = json.dumps(description)
    if raw_value is not None:
        text = text.replace(json.dumps(SENTINEL), raw_value)
    header["__metadata__"].update(description=text, **header_metadata)
    write_header(out, header, data)


def base_description(image_input: bool) -> dict:
    """The saved model's description; image_input: the same 4 features described as 1x2x2 images."""
    header, _ = read_header(_model()[0])
    description = json.loads(header["__metadata__"]["description"])
    if image_input:
        description["input"] = {"kind": "images", "shape": [1, 2, 2], "resize": "bilinear"}
    return description


def refused(path: Path, *fragments: str) -> str:
    """vaeguard.load raises a one-line ModelFileError naming the file and each fragment."""
    with pytest.raises(ModelFileError) as info:
        vaeguard.load(path, device="cpu")
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def refused_by_the_cli(path: Path, data: Path) -> None:
    """`info` and `score` end with one 'error: ...' line naming the file, exit 1."""
    for args in (["info", path], ["score", path, data, "-o", data.with_suffix(".out.csv")]):
        assert str(path) in one_line_error(invoke("-q", *args))
    assert not data.with_suffix(".out.csv").exists()


def table_csv(folder: Path) -> Path:
    data = folder / "d.csv"
    data.write_text("x0,x1,x2,x3\n0.1,0.2,0.3,0.4\n")
    return data


# ----------------------------------------------------------------------------- numbers beyond range

NON_FINITE = ["Infinity", "-Infinity", "NaN", "1e400", "-1e400", "1e309", "-2.5e999"]
huge_ints = st.integers(19, 4000).map(lambda digits: "9" * digits) | st.sampled_from([str(2**63), str(-(2**63) - 1), str(10**400), str(-(10**400))])
beyond_range = st.sampled_from(NON_FINITE) | huge_ints | (st.integers(2**63, 10**30) | st.integers(-(10**30), -(2**63) - 1)).map(str)


@fast_and_slow(st.booleans(), st.data(), beyond_range, st.booleans())
def _numbers_beyond_range(image_input, data, raw, through_cli):
    """Any number of the description (params, model_config, input, fitted, threshold rule,
    history) replaced by Infinity, NaN, 1e400 or an integer beyond 64 bits is named."""
    description = base_description(image_input)
    keys = data.draw(st.sampled_from([k for k in numeric_leaves(description) if k[0] not in ("metadata", "versions")]))
    put(description, keys, SENTINEL)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "t.vgm")
        with_description(_model()[0], path, description, raw)
        refused(path, f"field '{field_name(keys)}'", "must be a ")
        if through_cli:
            refused_by_the_cli(path, table_csv(Path(tmp)))


test_numbers_beyond_range, test_numbers_beyond_range_slow = _numbers_beyond_range


@pytest.mark.parametrize(
    "keys, raw",
    [
        (("fitted", "threshold"), str(10**400)),
        (("history", "train_loss", 0), str(10**400)),
        (("fitted", "threshold_rule", "fpr"), str(10**400)),
        (("model_config", "latent_neighbours"), "Infinity"),
        (("fitted", "threshold"), "1e400"),
    ],
)
def test_issue_overflow_cases_name_the_field(tmp_path, keys, raw):
    description = base_description(False)
    put(description, keys, SENTINEL)
    path = tmp_path / "t.vgm"
    with_description(_model()[0], path, description, raw)
    refused(path, f"field '{field_name(keys)}' of the model description must be a")
    refused_by_the_cli(path, table_csv(tmp_path))


def test_a_key_with_a_line_break_is_named_on_one_line(tmp_path):
    description = base_description(False)
    description["history"]["a\nb"] = [SENTINEL]
    path = tmp_path / "t.vgm"
    with_description(_model()[0], path, description, "Infinity")
    refused(path, 'field "history.a\\nb[0]" of the model description must be a finite number')


def test_an_integer_too_long_for_python_names_the_file(tmp_path):
    description = base_description(False)
    put(description, ("fitted", "seed"), SENTINEL)
    path = tmp_path / "t.vgm"
    with_description(_model()[0], path, description, "7" * 5000)
    refused(path, "damaged model description")


# ----------------------------------------------------------------------------- mistyped fields

# Every field the loader checks, with its test; the threshold rule's fields under the saved rule.
CHECKED = [(name, test) for name, test, _ in _FIELDS + _FIELDS_IF_PRESENT] + [
    (f"fitted.threshold_rule.{key}", test) for key, (test, _) in _RULE_FIELDS["fpr"].items()
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
    | st.sampled_from(["auto", "fused", "ratio", "bernoulli", "gaussian", "mlp", 0, 1, -1, 0.5, 2**32, 2**63 - 1]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def rejects(test, value) -> bool:
    try:
        return not test(value)
    except (TypeError, ValueError, AttributeError, KeyError):
        return True


@fast_and_slow(st.sampled_from(CHECKED), json_values, st.booleans())
def _mistyped_field(field, value, through_cli):
    """A checked field holding any other JSON value: named when its test refuses the value, else
    the model loads and scores or ends in another one-line ModelFileError naming the file."""
    name, test = field
    description = base_description(False)
    put(description, tuple(name.split(".")), value)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "t.vgm")
        with_description(_model()[0], path, description)
        if rejects(test, value):
            refused(path, "field ", name)  # the field, or a number inside it (quoted, or escaped)
        else:
            try:
                detector = vaeguard.load(path, device="cpu")
            except ModelFileError as exc:
                assert "\n" not in str(exc) and str(path) in str(exc)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    scores = detector.anomaly_score(_model()[1])
                assert np.all(detector.predict(_model()[1])[~np.isfinite(scores)] == -1)
        if through_cli:
            data = table_csv(Path(tmp))
            for args in (["info", path], ["score", path, data, "-o", Path(tmp, "s.csv")]):
                result = invoke("-q", *args)
                if result.exit_code != 0:
                    assert str(path) in one_line_error(result)


test_mistyped_field, test_mistyped_field_slow = _mistyped_field


TOP_LEVEL = ["params", "model_config", "input", "fitted", "history", "metadata", "versions"]


@fast_and_slow(st.sampled_from(["1", "2"]), st.sampled_from(TOP_LEVEL), json_values.filter(lambda v: not isinstance(v, dict)))
def _mistyped_top_level_field(version, name, value):
    """A top-level field that is not an object (a list as `metadata` in a version 1 file too)."""
    description = base_description(False)
    description[name] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "t.vgm")
        with_description(_model()[0], path, description, format_version=version)
        if name == "metadata" and version == "1" and not value:
            refused(path, "field 'input'")  # version 1 kept the input in metadata: now missing
        else:
            refused(path, "field ", name)  # the field, or a number inside it (quoted, or escaped)
        assert str(path) in one_line_error(invoke("-q", "info", path))


test_mistyped_top_level_field, test_mistyped_top_level_field_slow = _mistyped_top_level_field


def test_issue_version_1_file_with_a_list_as_metadata(tmp_path):
    description = base_description(False)
    description["metadata"] = ["a", 1]
    path = tmp_path / "t.vgm"
    with_description(_model()[0], path, description, format_version="1")
    refused(path, "field 'metadata' of the model description must be an object")
    refused_by_the_cli(path, table_csv(tmp_path))


# ----------------------------------------------------------------------------- tensor dtypes

SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


@fast_and_slow(st.data(), st.sampled_from(sorted(SAFETENSORS_DTYPES)), st.booleans())
def _relabelled_dtype(data, dtype, through_cli):
    """A tensor's header dtype changed (its bytes kept, its shape fitted to them) is refused
    naming the tensor and the dtype, whatever dtype it becomes."""
    header, payload = read_header(_model()[0])
    name = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    entry = header[name]
    start, end = entry["data_offsets"]
    itemsize = SAFETENSORS_DTYPES[dtype]
    assume(dtype != entry["dtype"] and (end - start) % itemsize == 0)  # a relabelling, whole items
    entry.update(dtype=dtype, shape=[(end - start) // itemsize])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "t.vgm")
        write_header(path, header, payload)
        refused(path, repr(name), f"dtype {dtype}")
        if through_cli:
            refused_by_the_cli(path, table_csv(Path(tmp)))


test_relabelled_dtype, test_relabelled_dtype_slow = _relabelled_dtype


@pytest.mark.parametrize("dtype", ["U64", "F8_E4M3", "F8_E5M2"])
def test_issue_mean_relabelled_is_refused(tmp_path, dtype):
    header, payload = read_header(_model()[0])
    start, end = header["mean"]["data_offsets"]
    header["mean"].update(dtype=dtype, shape=[(end - start) // SAFETENSORS_DTYPES[dtype]])
    path = tmp_path / "t.vgm"
    write_header(path, header, payload)
    refused(path, f"tensor 'mean' has dtype {dtype}")
    refused_by_the_cli(path, table_csv(tmp_path))


# ----------------------------------------------------------------------------- altered tensor bytes


def flipped(source: Path, out: Path, position: int, mask: int) -> None:
    """source with byte `position` of its tensor data XORed with mask."""
    raw = bytearray(source.read_bytes())
    raw[8 + struct.unpack("<Q", raw[:8])[0] + position] ^= mask
    out.write_bytes(bytes(raw))


@fast_and_slow(st.integers(0, 2**31), st.integers(1, 255), st.booleans())
def _altered_tensor_bytes(where, mask, through_cli):
    """Any byte of the tensor data changed in any way is refused naming the file."""
    source = _model()[0]
    size = len(read_header(source)[1])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "t.vgm")
        flipped(source, path, where % size, mask)
        refused(path)
        if through_cli:
            refused_by_the_cli(path, table_csv(Path(tmp)))


test_altered_tensor_bytes, test_altered_tensor_bytes_slow = _altered_tensor_bytes


def _count_refused_flips(tmp_path: Path, n_flips: int) -> int:
    """How many of n_flips random single-byte flips (seeded) in the tensor data are refused."""
    source = _model()[0]
    size = len(read_header(source)[1])
    rng = random.Random(24)
    refusals = 0
    for i in range(n_flips):
        path = tmp_path / f"flip{i}.vgm"
        flipped(source, path, rng.randrange(size), 1 << rng.randrange(8))
        try:
            vaeguard.load(path, device="cpu")
        except ModelFileError as exc:
            refusals += str(path) in str(exc)
    return refusals


def test_single_byte_flips_in_tensor_data_are_refused(tmp_path):
    assert _count_refused_flips(tmp_path, 10) == 10


@pytest.mark.slow
def test_single_byte_flips_in_tensor_data_are_refused_slow(tmp_path):
    assert _count_refused_flips(tmp_path, 50) == 50


def test_a_plausible_change_to_a_weight_is_caught_by_the_digest(tmp_path):
    """A finite, in-range change no other check can see: only the digest tells."""
    header, payload = read_header(_model()[0])
    start, end = header["model.decoder.head.bias"]["data_offsets"]
    values = np.frombuffer(payload[start:end], dtype="<f4").copy()
    values[0] += 0.5
    path = tmp_path / "t.vgm"
    write_header(path, header, payload[:start] + values.tobytes() + payload[end:])
    refused(path, DIGEST_MISMATCH)
    refused_by_the_cli(path, table_csv(tmp_path))
    result = invoke("info", "--json", path)
    assert DIGEST_MISMATCH in one_line_error(result)


def test_a_file_without_a_digest_loads_with_a_one_line_note(tmp_path):
    source, X = _model()
    header, payload = read_header(source)
    del header["__metadata__"]["tensors_sha256"]
    path = tmp_path / "old.vgm"
    write_header(path, header, payload)
    with pytest.warns(UserWarning) as caught:
        old = vaeguard.load(path, device="cpu")
    notes = [str(w.message) for w in caught if "digest" in str(w.message)]
    assert len(notes) == 1 and str(path) in notes[0] and "\n" not in notes[0]
    np.testing.assert_array_equal(old.anomaly_score(X), vaeguard.load(source, device="cpu").anomaly_score(X))
    result = invoke("info", path)
    assert result.exit_code == 0 and f"warning: {path} has no tensor digest" in result.output


# ----------------------------------------------------------------------------- generative sizes

counts = st.integers(-3, 40) | st.sampled_from([MAX_SAMPLES, MAX_SAMPLES + 1, MAX_INTERPOLATION_STEPS, MAX_INTERPOLATION_STEPS + 1, 10**9, 2**63, 10**30]) | st.integers(10**5, 10**40)


@fast_and_slow(st.sampled_from(["sample", "interpolate"]), counts, st.booleans())
def _generative_sizes(method, n, small_budget):
    """`sample(n)` and `interpolate(steps=n)` give n rows, or refuse (naming the parameter and
    its cap, or the memory budget) before allocating anything large."""
    path, X = _model()
    detector = vaeguard.load(path, device="cpu")
    parameter, cap, low = ("n", MAX_SAMPLES, 1) if method == "sample" else ("steps", MAX_INTERPOLATION_STEPS, 2)
    budget = 4 * 2**20 if small_budget else limits.MEMORY_BUDGET_BYTES
    start_rss = peak_rss()
    try:
        with mock.patch.object(limits, "MEMORY_BUDGET_BYTES", budget):
            rows = detector.sample(n) if method == "sample" else detector.interpolate(X[0], X[1], steps=n)
    except ValueError as exc:  # DataError is a ValueError
        message = str(exc)
        assert "\n" not in message and message.startswith(f"{parameter} ")
        if n < low:
            assert not isinstance(exc, DataError)
        elif n > cap:
            assert isinstance(exc, DataError) and f"over the limit of {cap:,}" in message
        else:
            assert isinstance(exc, DataError) and "memory budget" in message and 24 * n * X.shape[1] > budget
    else:
        assert low <= n <= cap and rows.shape == (n, X.shape[1])
    assert peak_rss() - start_rss < 256 * 2**20


test_generative_sizes, test_generative_sizes_slow = _generative_sizes


def test_issue_generative_sizes_are_refused_before_allocating():
    path, X = _model()
    detector = vaeguard.load(path, device="cpu")
    start_rss = peak_rss()
    with pytest.raises(DataError, match=re.escape(f"n is 1,000,000,000, over the limit of {MAX_SAMPLES:,}")):
        detector.sample(10**9)
    with pytest.raises(DataError, match=re.escape(f"steps is 1,000,000,000, over the limit of {MAX_INTERPOLATION_STEPS:,}")):
        detector.interpolate(X[0], X[1], steps=10**9)
    assert peak_rss() - start_rss < 64 * 2**20


def test_the_cli_caps_are_the_library_caps(tmp_path):
    path, _ = _model()
    result = invoke("sample", path, "-o", tmp_path / "s.csv", "--n", MAX_SAMPLES + 1)
    assert result.exit_code == 2 and str(MAX_SAMPLES) in result.output
    data = table_csv(tmp_path)
    result = invoke("interpolate", path, "1", "1", "--data", data, "-o", tmp_path / "i.csv", "--steps", MAX_INTERPOLATION_STEPS + 1)
    assert result.exit_code == 2 and str(MAX_INTERPOLATION_STEPS) in result.output
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "i.csv").exists()
