"""Hostile command lines, generated with hypothesis (issues #24 and #20).

Each property generates one kind of bad usage across every command that takes the option:
device names, values of enumerated options, sizes past their limits, config paths and
contents, list options that name nothing, heatmaps asked of a table model, output suffixes
that sample and interpolate cannot write. The contract: exit 2 with one `Error:` line naming
the option and what it accepts (or exit 1 with one line naming the file and field for a
config's contents), no traceback, no Python repr, nothing written. The accepted values
and limits the assertions use are the library's own (estimator constraints, vaeguard.limits),
so the CLI cannot drift from them. `python -m pytest -m slow tests/test_hostile_cli.py
--hypothesis-show-statistics` runs 250 examples per property.
"""

from __future__ import annotations

import functools
import os
import tempfile
import tomllib
from pathlib import Path

import numpy as np
from hypothesis import assume, event
from hypothesis import strategies as st
from PIL import Image
from test_hostile import _cli_table_model, fast_and_slow, invoke, one_line_error, session_dir, snapshot, time_limit

from vaeguard import limits
from vaeguard.calibration import LABEL_RULES
from vaeguard.cli import ENGINES
from vaeguard.gallery import OUTPUTS as GALLERY_OUTPUTS
from vaeguard.config import DATA_FIELDS, DEVICES, check_device, detector_fields
from vaeguard.estimator import VAEAnomalyDetector
from vaeguard.generative import INTERPOLATIONS
from vaeguard.plots import LATENT_MAPS
from vaeguard.inputs import ON_BAD_ROW


def usage_error(result, option: str) -> str:
    """The result exited 2 with one 'Error:' line naming `option`, no traceback, no repr."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert option in errors[0], result.output
    said = errors[0].rsplit(" got ", 1)[0]  # what follows "got" is the user's own value, quoted
    assert "('" not in said and "{'" not in said, errors[0]  # no tuple or set reprs
    return errors[0]


def strings(accepted=()) -> st.SearchStrategy[str]:
    """Arbitrary text and near misses of `accepted` (case, spaces, suffixes)."""
    near = [f(a) for a in accepted for f in (str.upper, str.title, lambda a: f" {a}", lambda a: a + "x", lambda a: a[:-1])]
    return st.one_of(st.text(max_size=40), st.sampled_from(near or [""]), st.from_regex(r"[a-z]{1,8}(:[0-9]{1,5})?", fullmatch=True))


@functools.lru_cache(maxsize=1)
def workspace() -> Path:
    """A model (table), a CSV and two images, shared by the properties: nothing here is written."""
    model, _ = _cli_table_model()
    root = model.parent
    (root / "rows.csv").write_text("id,a,b,c\nx,0.1,0.2,0.3\ny,0.3,0.1,0.4\n")
    for name in ("a.png", "b.png"):
        Image.new("L", (6, 6), 80).save(root / name)
    return root


def args_for(command: str, root: Path, out: Path) -> list:
    """A command line that is valid apart from the option the property adds."""
    model = root / "model.vgm"
    return {
        "train": ["train", root / "rows.csv", "-o", out / "m.vgm"],
        "score": ["score", model, root / "rows.csv", "-o", out / "s.csv"],
        "evaluate": ["evaluate", model, root / "rows.csv", "-o", out / "report"],
        "calibrate": ["calibrate", model, root / "rows.csv", "-o", out / "m.vgm"],
        "sample": ["sample", model, "-o", out / "rows.csv"],
        "interpolate": ["interpolate", model, "x", "y", "--data", root / "rows.csv", "-o", out / "path.csv"],
        "mnist": ["mnist", "-o", out / "report", "--no-download", "--data-dir", out / "none"],
        "digits": ["digits", "-o", out / "report"],
    }[command]


def refused(command: str, option_args: list, option: str) -> str:
    """Run `command` with `option_args` first (processed first); it must be a usage error that
    writes nothing and leaves the shared workspace as it was."""
    root = workspace()
    before = snapshot(root)
    with tempfile.TemporaryDirectory() as tmp:
        base = args_for(command, root, Path(tmp))
        message = usage_error(invoke("-q", base[0], *option_args, *base[1:]), option)
        assert os.listdir(tmp) == []
    assert snapshot(root) == before
    return message


# ----------------------------------------------------------------------------- devices

DEVICE_COMMANDS = ["train", "score", "evaluate", "calibrate", "sample", "interpolate", "mnist", "digits"]


@fast_and_slow(st.sampled_from(DEVICE_COMMANDS), strings(["auto", "cpu", "cuda", "cuda:0", "cuda:127", "mps"]))
def _device_names(command, text):
    try:
        check_device(text)
    except ValueError:
        event("refused")
        message = refused(command, [f"--device={text}"], "--device")
        assert all(name in message for name in DEVICES), message
        return
    event("accepted")
    if text != "auto":  # whatever the CLI accepts, torch accepts
        import torch

        torch.device(text)


test_device_names, test_device_names_slow = _device_names


# ----------------------------------------------------------------------------- enumerated values


def _options(name: str) -> tuple[str, ...]:
    """The estimator's accepted strings for parameter `name`, from its _parameter_constraints."""
    (constraint,) = [c for c in VAEAnomalyDetector._parameter_constraints[name] if hasattr(c, "options")]
    return tuple(sorted(constraint.options))


CHOICES = [
    ("train", "--likelihood", _options("likelihood")),
    ("train", "--score-type", _options("score_type")),
    ("train", "--architecture", _options("architecture")),
    ("score", "--on-bad-row", ON_BAD_ROW),
    ("evaluate", "--on-bad-row", ON_BAD_ROW),
    ("calibrate", "--on-bad-row", ON_BAD_ROW),
    ("score", "--engine", ENGINES),
    ("calibrate", "--rule", LABEL_RULES),
    ("interpolate", "--method", INTERPOLATIONS),
    ("mnist", "--latent-map", LATENT_MAPS),
    ("digits", "--latent-map", LATENT_MAPS),
]


@fast_and_slow(st.sampled_from(CHOICES).flatmap(lambda c: st.tuples(st.just(c), strings(c[2]))))
def _enumerated_values(case):
    (command, option, accepted), text = case
    assume(text not in accepted and not (option == "--engine" and text.lower() in accepted))
    message = refused(command, [f"{option}={text}"], option)
    assert all(value in message for value in accepted), message


test_enumerated_values, test_enumerated_values_slow = _enumerated_values


# ----------------------------------------------------------------------------- sizes

ROWS_CAP = limits.MEMORY_BUDGET_BYTES // 4  # a chunk or buffer of one float32 per row
SEED_CAP = 2**32 - 1
SIZES = [  # command, option, smallest, largest, extra arguments
    ("train", "--latent-dim", 1, limits.MAX_WIDTH, []),
    ("train", "--hidden-dims", 1, limits.MAX_WIDTH, []),
    ("train", "--buffer-rows", 2, ROWS_CAP, ["--out-of-core"]),
    ("score", "--chunk-size", 1, ROWS_CAP, []),
    ("score", "--workers", 1, os.cpu_count(), ["--engine", "dask"]),
    ("train", "--seed", 0, SEED_CAP, []),
    ("mnist", "--seed", 0, SEED_CAP, []),
    ("digits", "--seed", 0, SEED_CAP, []),
    ("sample", "--seed", 0, SEED_CAP, []),
    ("sample", "--n", 1, 100_000, []),
    ("interpolate", "--steps", 2, 1000, []),
    ("train", "--epochs", 1, None, []),
]


@fast_and_slow(
    st.sampled_from(SIZES),
    st.one_of(st.integers(1, 10**40), st.sampled_from([2**31, 2**32, 2**63, 2**64, 10**9, 10**12])),
    st.booleans(),
    st.integers(0, 2),
)
def _sizes_out_of_range(case, excess, too_small, position):
    command, option, low, high, extra = case
    if too_small:
        value = low - excess
    else:
        assume(high is not None)  # --epochs has no upper limit: early stopping ends a long run
        value = high + excess
    text = str(value)
    if option == "--hidden-dims":  # one bad layer among good ones
        text = ",".join(["8"] * position + [text] + ["4"] * (2 - position))
    message = refused(command, [f"{option}={text}", *extra], option)
    if not too_small:
        assert f"{high:,}" in message or str(high) in message, message


test_sizes_out_of_range, test_sizes_out_of_range_slow = _sizes_out_of_range


# ----------------------------------------------------------------------------- config files

toml_key = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)
toml_scalar = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.floats(allow_nan=False).map(repr),
    st.sampled_from(["true", "false", "nan", "inf", "-inf", '"auto"', '"x"', '""', "[]", '["a"]', "[0]", "[1, 2, 3]", "[-1]", "[1000000000]", '"cuda:999"', '"tpu"', "[8, 8]", "[100000, 100000]", "{a = 1}"]),
    st.text(max_size=20).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
)
CONFIG_KINDS = ["missing", "fifo", "folder", "devnull", "link_to_fifo", "not_toml", "not_utf8", "unknown_table", "unknown_field", "value"]


@fast_and_slow(
    st.sampled_from(CONFIG_KINDS),
    st.sampled_from(["train", "mnist", "digits"]),
    st.text(max_size=80),
    toml_key,
    st.sampled_from(["detector", "data"]),
    st.one_of(st.sampled_from(detector_fields()), st.sampled_from(DATA_FIELDS)),
    toml_scalar,
)
def _config_files(kind, command, text, key, table, field, value):
    if kind == "value":
        command = "train"  # a valid value would train a digit model; train stops at the empty data
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = root / "run.toml"
        data = root / "empty.csv"
        data.write_text("a,b\n")  # a valid config reaches the data: one line naming this file
        if kind == "fifo":
            os.mkfifo(config)
        elif kind == "folder":
            config.mkdir()
        elif kind == "devnull":
            config = Path(os.devnull)
        elif kind == "link_to_fifo":
            os.mkfifo(root / "pipe")
            config.symlink_to(root / "pipe")
        elif kind == "not_toml":
            try:
                tomllib.loads(text)
                assume(False)
            except tomllib.TOMLDecodeError:
                config.write_text(text, encoding="utf-8")
        elif kind == "not_utf8":
            config.write_bytes(b"[detector]\nlatent_dim = \xff\xfe\n")
        elif kind == "unknown_table":
            assume(key not in ("detector", "data"))
            config.write_text(f"[{key}]\n")
        elif kind == "unknown_field":
            known = detector_fields() if table == "detector" else DATA_FIELDS
            assume(key not in known)
            config.write_text(f"[{table}]\n{key} = 1\n")
        elif kind == "value":
            table = "detector" if field in detector_fields() else "data"
            config.write_text(f"[{table}]\n{field} = {value}\n")
            try:
                tomllib.loads(config.read_text())
            except tomllib.TOMLDecodeError:
                assume(False)  # the not_toml kind covers these
        base = {"train": ["train", data, "-o", root / "m.vgm"], "mnist": ["mnist", "--no-download", "--data-dir", root / "none", "-o", root / "r"], "digits": ["digits", "-o", root / "r", "--epochs", "1"]}[command]
        event(kind)
        before = snapshot(root)
        with time_limit(20):
            result = invoke("-q", base[0], "--config", config, *base[1:])
        if kind in ("missing", "fifo", "folder", "devnull", "link_to_fifo"):
            usage_error(result, "--config")
        else:
            message = one_line_error(result)
            if kind != "value" or str(data) not in message:  # a valid value: the data's error
                assert str(config) in message, message
            if kind == "unknown_field":
                assert key in message and f"[{table}]" in message, message
            if kind == "value" and str(data) not in message:
                assert f"[{table}] {field} " in message, message
        assert snapshot(root) == before


test_config_files, test_config_files_slow = _config_files


# ----------------------------------------------------------------------------- lists naming nothing


@fast_and_slow(st.sampled_from(["--columns", "--exclude"]), st.text(alphabet=", \t\n\u00a0\u3000", max_size=12), st.booleans())
def _lists_naming_nothing(option, text, out_of_core):
    refused("train", [f"{option}={text}", *(["--out-of-core"] if out_of_core else [])], option)


test_lists_naming_nothing, test_lists_naming_nothing_slow = _lists_naming_nothing


# ----------------------------------------------------------------------------- heatmaps of a table model


# A name from argv holds no lone surrogate outside the surrogateescape range (Cs excluded).
FILE_NAME_CHARACTERS = st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",))


@fast_and_slow(st.sampled_from(["local", "LOCAL", "dask", "Spark"]), st.text(alphabet=FILE_NAME_CHARACTERS, min_size=1, max_size=30))
def _heatmaps_of_a_table_model(engine, folder):
    assume(folder not in (".", ".."))
    with tempfile.TemporaryDirectory() as tmp:
        message = refused("score", ["--engine", engine, "--heatmaps", Path(tmp, "maps", folder)], "--heatmaps")
        assert "image models" in message, message
        assert not Path(tmp, "maps").exists()


test_heatmaps_of_a_table_model, test_heatmaps_of_a_table_model_slow = _heatmaps_of_a_table_model


# ----------------------------------------------------------------------------- output suffixes


@functools.lru_cache(maxsize=1)
def image_model() -> Path:
    root = session_dir("vaeguard-hostile-cli-")
    (root / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray((rng.random((6, 6)) * 255).astype(np.uint8)).save(root / "imgs" / f"{i}.png")
    result = invoke("-q", "train", root / "imgs", "-o", root / "im.vgm", "--epochs", "1", "--hidden-dims", "4", "--latent-dim", "2", "--fpr", "0.4")
    assert result.exit_code == 0, result.output
    return root / "im.vgm"


SUFFIXES = [".png", ".PNG", ".csv", ".CSV", ".csv.gz", ".gz", ".jpg", ".jpeg", ".parquet", ".png.bak", ".csv.", "", ".", ".tar.gz"]


@fast_and_slow(
    st.sampled_from(["sample", "interpolate"]),
    st.sampled_from(["table", "images"]),
    st.text(alphabet=FILE_NAME_CHARACTERS, max_size=20),
    st.one_of(st.sampled_from(SUFFIXES), st.from_regex(r"\.[A-Za-z0-9]{1,5}", fullmatch=True)),
    st.booleans(),
)
def _gallery_suffixes(command, kind, stem, suffix, accepted_suffix):
    if accepted_suffix:  # half the cases: one the command writes for this kind, in any case
        suffixes = GALLERY_OUTPUTS[command][kind][1]
        suffix = suffixes[len(stem) % len(suffixes)].upper() if len(stem) % 3 == 0 else suffixes[len(stem) % len(suffixes)]
    name = stem + suffix
    assume(name not in ("", ".", "..") and len(name.encode()) < 200)
    root = workspace()
    model = root / "model.vgm" if kind == "table" else image_model()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, name)
        if command == "sample":
            args = ["sample", model, "-o", out, "--n", "2"]
        elif kind == "table":
            args = ["interpolate", model, "x", "y", "--data", root / "rows.csv", "-o", out, "--steps", "2"]
        else:
            args = ["interpolate", model, root / "a.png", root / "b.png", "-o", out, "--steps", "2"]
        result = invoke("-q", *args)
        _, accepted = GALLERY_OUTPUTS[command][kind]
        event(f"{command} {kind}: {'written' if result.exit_code == 0 else 'refused'}")
        if result.exit_code == 0:
            assert out.is_file() and any(name.lower().endswith(s) for s in accepted), name
        else:
            message = usage_error(result, "--out")
            assert all(f"*{s}" in message for s in accepted), message
            assert os.listdir(tmp) == []


test_gallery_suffixes, test_gallery_suffixes_slow = _gallery_suffixes


def test_the_issue_cases():
    """The reproductions of issues #24 and #20, one each."""
    refused("train", ["--device", "tpu"], "--device")
    assert "must be auto, bernoulli or gaussian, got 'poisson'" in refused("train", ["--likelihood", "poisson"], "--likelihood")
    refused("train", ["--score-type", "nll"], "--score-type")
    refused("train", ["--architecture", "cnn"], "--architecture")
    assert f"{limits.MAX_WIDTH:,}" in refused("train", ["--latent-dim", "1000000000"], "--latent-dim")
    assert f"{limits.MAX_WIDTH:,}" in refused("train", ["--hidden-dims", "1000000000"], "--hidden-dims")
    assert "does not exist" in refused("train", ["-c", "missing.toml"], "--config")
    refused("train", ["--columns", ","], "--columns")
    refused("score", ["--heatmaps", "maps"], "--heatmaps")
    root = workspace()
    with tempfile.TemporaryDirectory() as tmp:
        message = usage_error(invoke("sample", root / "model.vgm", "-o", Path(tmp, "grid.jpg")), "--out")
        assert "(*.csv, *.csv.gz), got grid.jpg" in message and os.listdir(tmp) == []
