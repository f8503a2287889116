"""Hostile input and interrupted runs, generated with hypothesis.

Each property builds files around one kind of attack from issue #12 (outputs aimed at
inputs, links and devices; image folders holding FIFOs, EPS files, bombs, NaN pixels and
names that are not UTF-8; damaged or inflated model files; absurd sizes) and asserts the
contract: a documented error type naming the file or field, or a correct result; inputs
and existing outputs byte-identical afterwards; no temporary file left; no process
started; bounded memory. `test_X` runs a few examples in the default suite, `test_X_slow`
many more (`python -m pytest -m slow tests/test_hostile.py --hypothesis-show-statistics`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gzip
import hashlib
import json
import os
import resource
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.numpy import save as safetensors_bytes

import vaeguard
from vaeguard import limits
from vaeguard.atomic import atomic_write, remove_stale_parts
from vaeguard.errors import DataError, ModelFileError
from vaeguard.images import iter_image_batches, read_image_folder
from vaeguard.footprint import check_model_size
from vaeguard.limits import MEMORY_BUDGET_BYTES
from vaeguard.model import VAEConfig
from vaeguard.modelfile import _FIELDS, FittedState

_COMMON = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck), print_blob=True)
FAST = settings(max_examples=20, **_COMMON)
SLOW = settings(max_examples=250, **_COMMON)
MEMORY_SLACK = 1536 * 2**20  # peak RSS may grow by at most this much during one property


def fast_and_slow(*strategies, fast: settings = FAST, slow: settings = SLOW):
    """Two tests from one property body: a short default run and a long one marked slow."""

    def make(body):
        def fast_test(case):
            body(*case)

        def slow_test(case):
            body(*case)

        cases = st.tuples(*strategies)
        return fast(given(cases)(fast_test)), pytest.mark.slow(slow(given(cases)(slow_test)))

    return make


# ----------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, bytes]:
    """Digest of every regular file under root (not following links), by relative path."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            st_ = os.lstat(path)
            key = os.fsencode(path.relative_to(root))
            if stat.S_ISREG(st_.st_mode):
                out[key] = hashlib.sha256(path.read_bytes()).digest() + (st_.st_mode & 0o777).to_bytes(2, "big")
            else:
                out[key] = stat.S_IFMT(st_.st_mode).to_bytes(4, "big")
    return out


def part_files(root: Path) -> list[str]:
    return [n for _, _, files in os.walk(root) for n in files if n.endswith(".part")]


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def no_process_started():
    """Fail if anything tries to start a process (Pillow's EPS plugin runs Ghostscript)."""
    started = []

    def refuse(*args, **kwargs):
        started.append(args)
        raise AssertionError(f"a process was started: {args!r}")

    with mock.patch.object(subprocess, "Popen", side_effect=refuse), mock.patch.object(os, "system", side_effect=refuse), mock.patch.object(os, "posix_spawn", side_effect=refuse):
        yield started
    assert not started


@contextlib.contextmanager
def time_limit(seconds: int):
    """A hang (a FIFO opened for reading) becomes a test failure instead of a stuck suite."""

    def expired(signum, frame):
        raise AssertionError(f"still running after {seconds} s: hung")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------- outputs

OUTPUT_KINDS = ["new", "existing", "input", "symlink_to_input", "hardlink_to_input", "symlink_to_existing", "fifo", "folder", "dev_null", "dangling_symlink"]


@fast_and_slow(
    st.sampled_from(OUTPUT_KINDS),
    st.text(max_size=200),
    st.booleans(),
    st.sampled_from([0o600, 0o640, 0o644, 0o664]),
    st.booleans(),
)
def _output_guard(kind, text, gz, mode, fail_midway):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data.csv"
        data.write_bytes(b"a,b\n1,2\n")
        model = root / "model.vgm"
        model.write_bytes(b"model bytes")
        name = "out.csv.gz" if gz else "out.csv"
        out = root / name
        existing = root / ("old.csv.gz" if gz else "old.csv")
        existing.write_bytes(b"old output")
        os.chmod(existing, mode)
        if kind == "existing":
            out = existing
        elif kind == "input":
            out = data
        elif kind == "symlink_to_input":
            out.symlink_to(data)
        elif kind == "hardlink_to_input":
            os.link(model, out)
        elif kind == "symlink_to_existing":
            out.symlink_to(existing)
        elif kind == "fifo":
            os.mkfifo(out)
        elif kind == "folder":
            out.mkdir()
        elif kind == "dev_null":
            out = Path(os.devnull)
        elif kind == "dangling_symlink":
            out.symlink_to(root / "elsewhere" / name)
        before = snapshot(root)
        refused = kind in ("input", "symlink_to_input", "hardlink_to_input", "fifo", "folder", "dev_null")
        try:
            with atomic_write(out, "w", inputs=[data, model], newline="") as fh:
                fh.write(text)
                if fail_midway:
                    raise KeyboardInterrupt
        except DataError as exc:
            assert refused, f"{kind}: refused: {exc}"
            assert str(out) in str(exc) and "\n" not in str(exc)
            assert snapshot(root) == before
            assert not part_files(root)
            return
        except KeyboardInterrupt:
            assert fail_midway and not refused
            assert snapshot(root) == before  # nothing replaced, no .part left
            return
        assert not refused, f"{kind}: was written"
        assert not part_files(root)
        target = Path(os.path.realpath(out))
        raw = target.read_bytes()
        assert (gzip.decompress(raw) if gz else raw) == text.encode("utf-8")
        if kind in ("symlink_to_existing", "dangling_symlink"):
            assert out.is_symlink()  # the link stays a link; its target was replaced
        if kind in ("existing", "symlink_to_existing"):
            assert stat.S_IMODE(os.stat(target).st_mode) == mode
        assert data.read_bytes() == b"a,b\n1,2\n" and model.read_bytes() == b"model bytes"


test_output_guard, test_output_guard_slow = _output_guard


# A process that holds a write open: vaeguard.atomic without running vaeguard/__init__.py
# (which imports torch: seconds per start), with the signals as under a terminal, whatever
# this test run inherited (a nohup'd or background CI job ignores SIGHUP, and atomic_write
# rightly leaves an ignored signal ignored). `body` writes, prints "writing" and sleeps.
_WRITER_PRELUDE = f"""
import signal, sys, time, types
for signum in (signal.SIGHUP, signal.SIGTERM):
    signal.signal(signum, signal.SIG_DFL)
signal.signal(signal.SIGINT, signal.default_int_handler)
package = types.ModuleType("vaeguard")
package.__path__ = [{str(Path(vaeguard.__file__).parent)!r}]
sys.modules["vaeguard"] = package
"""
_WRITER = _WRITER_PRELUDE + """
from vaeguard.atomic import atomic_write
with atomic_write(sys.argv[1], "w") as fh:
    fh.write("x" * 1_000_000)
    fh.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def start_writer(out: Path, script: str = _WRITER) -> subprocess.Popen:
    """Run `script` (a `_WRITER_PRELUDE` and a body) on `out`; return once it is writing."""
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert proc.stdout.readline().strip() == b"writing", proc.stderr.read().decode()
    return proc


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_during_a_write_leaves_no_part_file_and_the_old_output(tmp_path, signum):
    out = tmp_path / "out.csv"
    out.write_bytes(b"previous run")
    proc = start_writer(out)
    assert len(part_files(tmp_path)) == 1
    proc.send_signal(signum)
    assert proc.wait(timeout=30) != 0
    assert out.read_bytes() == b"previous run"
    assert not part_files(tmp_path)


def test_sigkill_leaves_a_part_file_that_the_next_write_removes_but_a_live_one_is_kept(tmp_path):
    out = tmp_path / "out.csv"
    out.write_bytes(b"previous run")
    killed = start_writer(out)
    killed.kill()
    killed.wait(timeout=30)
    [stale] = part_files(tmp_path)
    live = start_writer(out)  # a concurrent writer of the same output, still running
    try:
        [live_part] = set(part_files(tmp_path)) - {stale}
        time.sleep(0.05)
        with atomic_write(out) as fh:  # this process started before the live part was written
            fh.write("new")
        assert out.read_text() == "new"
        assert (tmp_path / live_part).exists()  # locked by a live writer: kept
        # A part file written after this process started is never taken for a stale one,
        # so the killed writer's file is removed only when it is older than this process.
        assert not (tmp_path / stale).exists() or (tmp_path / stale).stat().st_mtime >= _process_start()
    finally:
        live.kill()
        live.wait(timeout=30)
    os.utime(tmp_path / live_part, (0, 0))  # now dead and old: stale
    assert [p.name for p in remove_stale_parts(out)] == [live_part]


def _process_start() -> float:
    from vaeguard import atomic

    return atomic._PROCESS_START


def test_stale_part_of_an_old_run_is_removed(tmp_path):
    out = tmp_path / "out.csv"
    stale = tmp_path / ".out.csv.abcd1234.part"
    stale.write_bytes(b"x" * 1000)
    os.utime(stale, (0, 0))
    other = tmp_path / ".other.csv.abcd1234.part"  # another output's: not ours to remove
    other.write_bytes(b"x")
    os.utime(other, (0, 0))
    with atomic_write(out) as fh:
        fh.write("ok")
    assert not stale.exists() and other.exists() and out.read_text() == "ok"


# ----------------------------------------------------------------------------- image folders


def _png_with_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height (a decompression bomb's header)."""
    import io

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    start = raw.index(b"IHDR")
    raw[start + 4 : start + 12] = struct.pack(">II", width, height)
    raw[start + 17 : start + 21] = struct.pack(">I", zlib.crc32(bytes(raw[start : start + 17])))
    return bytes(raw)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"
GOOD_MODES = {"PNG": ["L", "RGB", "RGBA", "P", "I;16"], "JPEG": ["L", "RGB"], "BMP": ["L", "RGB", "P"], "TIFF": ["L", "RGB", "F", "I;16"]}
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif"}
HOSTILE = ["eps", "fifo", "garbage", "truncated", "bomb_header", "huge", "over_budget", "nan_tiff", "not_utf8", "dev_zero", "gif_as_png"]

good_image = st.tuples(st.sampled_from(sorted(GOOD_MODES)), st.integers(0, 4), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**32 - 1))


def _write_good(path: Path, fmt: str, mode_index: int, w: int, h: int, seed: int) -> None:
    modes = GOOD_MODES[fmt]
    mode = modes[mode_index % len(modes)]
    rng = np.random.default_rng(seed)
    if mode == "F":
        image = Image.fromarray(rng.random((h, w), dtype=np.float32), mode="F")
    elif mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), mode="RGB").convert(mode)
    image.save(path, format=fmt)


def _write_hostile(folder: Path, kind: str, index: int) -> str:
    name = f"h{index}_{kind}.png"
    path = folder / name
    if kind == "eps":
        path.write_bytes(EPS)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "garbage":
        path.write_bytes(os.urandom(64))
    elif kind == "truncated":
        Image.new("RGB", (8, 8), (1, 2, 3)).save(path)
        path.write_bytes(path.read_bytes()[:40])
    elif kind == "bomb_header":
        path.write_bytes(_png_with_size(100_000, 100_000))
    elif kind == "huge":
        path.write_bytes(_png_with_size(9000, 9000))
    elif kind == "over_budget":
        path.write_bytes(_png_with_size(10_000, 9_000))  # 90 M pixels: refused from the header
    elif kind == "nan_tiff":
        name = f"h{index}_nan.tif"
        values = np.full((4, 4), 0.5, dtype=np.float32)
        values[1, 2] = np.nan
        Image.fromarray(values, mode="F").save(folder / name, format="TIFF")
    elif kind == "not_utf8":
        raw = os.fsencode(folder) + b"/h%d_caf\xe9.png" % index
        Image.new("L", (4, 4), 7).save(raw.decode("utf-8", "surrogateescape"), format="PNG")
        return os.fsdecode(raw[len(os.fsencode(folder)) + 1 :])
    elif kind == "dev_zero":
        path.symlink_to("/dev/zero")
    elif kind == "gif_as_png":
        Image.new("P", (4, 4)).save(path, format="GIF")
    return name


@fast_and_slow(
    st.lists(good_image, max_size=6),
    st.lists(st.sampled_from(HOSTILE), max_size=5),
    st.integers(1, 4),
    st.sampled_from([(1, 5, 6), (3, 4, 4), (1, 1, 1)]),
)
def _image_folder(goods, hostiles, batch_size, shape):
    if not goods and not hostiles:
        hostiles = ["garbage"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "imgs")
        (folder / "sub").mkdir(parents=True)
        good_names = []
        for i, (fmt, mode_index, w, h, seed) in enumerate(goods):
            rel = f"sub/g{i}{SUFFIX[fmt]}" if i % 2 else f"g{i}{SUFFIX[fmt]}"
            _write_good(folder / rel, fmt, mode_index, w, h, seed)
            good_names.append(rel)
        bad_names = [_write_hostile(folder, kind, i) for i, kind in enumerate(hostiles)]
        before = snapshot(folder)
        start_rss = peak_rss()
        with no_process_started(), time_limit(60):
            batches = list(iter_image_batches(folder, shape, batch_size=batch_size))
            with contextlib.suppress(DataError), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # mixed channels: converted, with a warning
                read_image_folder(folder)  # a mixed folder may be refused, never hang or crash
        paths = [p for b in batches for p in b.paths]
        errors = dict(e for b in batches for e in b.errors)
        shown_bad = [n.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") for n in bad_names]
        assert sorted(paths) == sorted(good_names)
        assert sorted(errors) == sorted(shown_bad)
        assert all(message and "\n" not in message for message in errors.values())
        for name in paths + list(errors):
            name.encode("utf-8")  # every listed name can be written to a CSV
        X = np.concatenate([b.X for b in batches])
        assert X.shape == (len(good_names), int(np.prod(shape)))
        assert np.isfinite(X).all() and X.min(initial=0) >= 0 and X.max(initial=1) <= 1
        assert snapshot(folder) == before
        assert peak_rss() - start_rss < MEMORY_SLACK


test_image_folder, test_image_folder_slow = _image_folder


@fast_and_slow(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6), st.sampled_from(["L", "RGB"])), min_size=1, max_size=8))
def _folder_shape_is_agreed_or_refused(specs):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, (h, w, mode) in enumerate(specs):
            Image.new(mode, (w, h), 128 if mode == "L" else (128, 128, 128)).save(folder / f"{i:02d}.png")
        sizes = {(h, w) for h, w, _ in specs}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                data = read_image_folder(folder)
            except DataError as exc:
                assert len(sizes) > 1, exc
                odd = [f"{i:02d}.png" for i, (h, w, _) in enumerate(specs) if (h, w) != data_size_majority(specs)]
                assert odd and odd[0] in str(exc) and "--image-size" in str(exc)
                return
        assert len(sizes) == 1 and data.shape[1:] == next(iter(sizes))
        modes = [m for *_, m in specs]
        majority = max(set(modes), key=lambda m: (modes.count(m), m == "L"))
        assert data.shape[0] == (1 if majority == "L" else 3) or modes.count("L") == modes.count("RGB")
        assert bool(caught) == (len(set(modes)) > 1)


def data_size_majority(specs):
    from collections import Counter

    return Counter((h, w) for h, w, _ in specs).most_common(1)[0][0]


test_folder_shape_is_agreed_or_refused, test_folder_shape_is_agreed_or_refused_slow = _folder_shape_is_agreed_or_refused


# ----------------------------------------------------------------------------- model files

FAST_DETECTOR = dict(latent_dim=2, hidden_dims=(8,), epochs=2, batch_size=16, random_state=0, device="cpu", fpr=0.2)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    path = tmp_path_factory.mktemp("model") / "m.vgm"
    vaeguard.VAEAnomalyDetector(**FAST_DETECTOR).fit(X).save(path)
    return path, X


def _parts(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        return dict(fh.metadata()), {k: fh.get_tensor(k) for k in fh.keys()}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
FIELD_NAMES = [name for name, _, _ in _FIELDS] + ["fitted.threshold_rule.rule", "input.kind", "input.columns", "input.shape"]


def _set(description: dict, dotted: str, value, delete: bool) -> None:
    *parents, key = dotted.split(".")
    holder = description
    for part in parents:
        holder = holder[part]
    if delete:
        holder.pop(key, None)
    else:
        holder[key] = value


mutation = st.one_of(
    st.tuples(st.just("field"), st.sampled_from(FIELD_NAMES), json_values, st.booleans()),
    st.tuples(st.just("size"), st.sampled_from(["model_config.hidden_dims", "model_config.latent_dim", "model_config.input_dim", "params.n_importance_samples"]), st.sampled_from([0, -3, 10**8, 12_500_000, 2_000_000_000, [12_500_000, 8], [0], [10**9]]), st.just(False)),
    st.tuples(st.just("array"), st.sampled_from(["scale", "mean", "calibration_scores", "model.encoder.head.weight", "model.decoder.head.bias", "model.output_logvar"]), st.sampled_from(["zero", "nan", "negative", "inf", "drop", "reshape", "int"]), st.just(False)),
    st.tuples(st.just("deep"), st.integers(33, 100_000), st.sampled_from(["[", "{\"a\":"]), st.just(False)),
    st.tuples(st.just("bytes"), st.integers(0, 10**6), st.sampled_from(["truncate", "flip"]), st.just(False)),
    st.tuples(st.just("extra"), st.just("model.evil"), st.just(None), st.just(False)),
)


def _mutate(path: Path, out: Path, change) -> None:
    kind, where, what, delete = change
    metadata, arrays = _parts(path)
    description = json.loads(metadata["description"])
    text = None
    if kind in ("field", "size"):
        with contextlib.suppress(KeyError, TypeError, AttributeError):
            value = what if kind == "field" else (list(what) if isinstance(what, list) else what)
            if kind == "size" and where.endswith("hidden_dims") and not isinstance(value, list):
                value = [value]
            _set(description, where, value, delete)
    elif kind == "array":
        values = arrays.get(where)
        if values is not None:
            values = values.copy()
            if what == "zero":
                values.flat[0] = 0
            elif what == "nan":
                values.flat[-1] = np.nan
            elif what == "negative":
                values.flat[0] = -1
            elif what == "inf":
                values.flat[0] = np.inf
            elif what == "reshape":
                values = values.reshape(-1)[:-1] if values.size > 1 else np.zeros(3, values.dtype)
            elif what == "int":
                values = np.zeros(values.shape, dtype=np.int64)
            if what == "drop":
                arrays.pop(where)
            else:
                arrays[where] = values
    elif kind == "deep":
        text = json.dumps(description)[:-1] + ', "nest": ' + what * where + "1" + ("]" if what == "[" else "}") * where + "}"
    elif kind == "extra":
        arrays[where] = np.zeros((2, 2), np.float32)
    metadata["description"] = text if text is not None else json.dumps(description, allow_nan=True)
    payload = safetensors_bytes(arrays, metadata)
    if kind == "bytes":
        offset = where % len(payload)
        payload = payload[:offset] if what == "truncate" else payload[:offset] + bytes([payload[offset] ^ 0xFF]) + payload[offset + 1 :]
    out.write_bytes(payload)


def _model_file_check(saved_model, change):
    path, X = saved_model
    with tempfile.TemporaryDirectory() as tmp:
        tampered = Path(tmp, "t.vgm")
        _mutate(path, tampered, change)
        before = snapshot(Path(tmp))
        start_rss = peak_rss()
        with no_process_started():
            try:
                FittedState.load(tampered)
                detector = vaeguard.load(tampered, device="cpu")
            except ModelFileError as exc:
                message = str(exc)
                assert "\n" not in message and str(tampered) in message
                assert "Traceback" not in message
            else:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "X does not have valid feature names")  # a tampered name list
                    scores = detector.anomaly_score(X)
                    predicted = detector.predict(X)
                    pv = detector.p_values(X)
                assert np.all(predicted[~np.isfinite(scores)] == -1)
                assert np.all(pv[~np.isfinite(scores)] == 0)
        assert snapshot(Path(tmp)) == before
        assert peak_rss() - start_rss < MEMORY_SLACK


@FAST
@given(change=mutation)
def test_tampered_model_file(saved_model, change):
    _model_file_check(saved_model, change)


@pytest.mark.slow
@SLOW
@given(change=mutation)
def test_tampered_model_file_slow(saved_model, change):
    _model_file_check(saved_model, change)


def test_every_described_field_missing_or_mistyped_is_named(saved_model, tmp_path):
    path, _ = saved_model
    n_cases = 0
    for name, valid, _ in _FIELDS:
        wrong = [v for v in (12345, "text", [1.5], None, {"x": 1}) if not valid(v)]
        for change in [("field", name, None, True), *[("field", name, v, False) for v in wrong]]:
            tampered = tmp_path / "t.vgm"
            _mutate(path, tampered, change)
            with pytest.raises(ModelFileError, match=rf"'{name}'"):
                vaeguard.load(tampered)
            n_cases += 1
    assert n_cases > 3 * len(_FIELDS)


@pytest.mark.parametrize(
    "change, message",
    [
        (("size", "model_config.hidden_dims", [12_500_000, 8], False), "has shape .* in the file, but the description"),
        (("array", "scale", "zero", False), "tensor 'scale' holds 1 value"),
        (("array", "model.encoder.head.weight", "nan", False), "tensor 'model.encoder.head.weight' holds 1 NaN"),
        (("deep", 100_000, "[", False), "nests 100001 levels deep"),
        (("size", "model_config.hidden_dims", [0], False), "model_config.hidden_dims' of the model description must be a list of integers >= 1"),
    ],
)
def test_issue_model_file_cases(saved_model, tmp_path, change, message):
    tampered = tmp_path / "t.vgm"
    _mutate(saved_model[0], tampered, change)
    start_rss = peak_rss()
    with pytest.raises(ModelFileError, match=message):
        vaeguard.load(tampered)
    assert peak_rss() - start_rss < 256 * 2**20


# ----------------------------------------------------------------------------- sizes

SMALL_BUDGET = 256 * 2**20  # the budget these properties run under, to keep the suite light
sizes = st.one_of(st.integers(1, 16), st.sampled_from([0, -3, 10**6, 10**8, 2_000_000_000]))


@fast_and_slow(sizes, st.lists(sizes, min_size=1, max_size=3), st.one_of(st.integers(1, 64), st.sampled_from([0, 10**6, 10**9])))
def _absurd_sizes(latent_dim, hidden_dims, n_samples):
    X = np.random.default_rng(0).normal(size=(40, 3))
    detector = vaeguard.VAEAnomalyDetector(latent_dim=latent_dim, hidden_dims=tuple(hidden_dims), n_importance_samples=n_samples, score_type="iwae", epochs=1, batch_size=16, random_state=0, device="cpu", fpr=0.2)
    start_rss = peak_rss()
    sane = latent_dim >= 1 and all(h >= 1 for h in hidden_dims) and 1 <= n_samples <= 100_000
    try:
        with mock.patch.object(limits, "MEMORY_BUDGET_BYTES", SMALL_BUDGET):
            detector.fit(X)
    except ValueError as exc:  # DataError is a ValueError
        message = str(exc)
        assert "\n" not in message
        assert not sane or "memory budget" in message or "limit" in message, message
    else:
        assert sane
        with mock.patch.object(limits, "MEMORY_BUDGET_BYTES", SMALL_BUDGET):
            assert np.isfinite(detector.anomaly_score(X)).all()
    assert peak_rss() - start_rss < SMALL_BUDGET + 256 * 2**20


test_absurd_sizes, test_absurd_sizes_slow = _absurd_sizes


def test_issue_size_cases_are_refused_before_allocating():
    start_rss = peak_rss()
    for cfg in [VAEConfig(input_dim=4, latent_dim=100_000_000), VAEConfig(input_dim=4, hidden_dims=(2_000_000_000,)), VAEConfig(input_dim=784, hidden_dims=(12_500_000, 8))]:
        with pytest.raises(DataError, match="memory budget|limit"):
            check_model_size(cfg, rows=128, training=True)
    with pytest.raises(DataError, match="100000x100000"):
        from vaeguard.images import load_image

        load_image("unused.png", (1, 100_000, 100_000))
    with pytest.raises(ValueError, match="n_importance_samples"):
        vaeguard.VAEAnomalyDetector(n_importance_samples=10**9).fit(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="hidden_dims"):
        vaeguard.VAEAnomalyDetector(hidden_dims=(0,)).fit(np.zeros((10, 2)))
    assert peak_rss() - start_rss < 256 * 2**20
    assert MEMORY_BUDGET_BYTES > 0


# ----------------------------------------------------------------------------- scores


@functools.lru_cache(maxsize=1)
def gaussian_detector():
    """A tiny gaussian-likelihood detector on 5 standardised features (trained once)."""
    X = np.random.default_rng(1).normal(size=(300, 5))
    return vaeguard.VAEAnomalyDetector(**{**FAST_DETECTOR, "hidden_dims": (16,)}).fit(X), X


@fast_and_slow(st.integers(0, 299), st.integers(1, 300), st.sampled_from(["elbo", "recon", "kl", "iwae"]))
def _batch_invariance(start, length, score_type):
    detector, X = gaussian_detector()
    detector.score_type_ = score_type
    try:
        full = detector.anomaly_score(X)
        stop = min(len(X), start + length)
        np.testing.assert_array_equal(detector.anomaly_score(X[start:stop]), full[start:stop])
    finally:
        detector.score_type_ = "elbo"


test_batch_invariance, test_batch_invariance_slow = _batch_invariance


@fast_and_slow(st.lists(st.sampled_from([1e20, -1e20, 1e30, 3e38, 3.4e38, -3.4e38, 1e39, 0.5, -2.0, 1e-30]), min_size=5, max_size=5), st.integers(0, 5))
def _huge_cells(row, position):
    detector, X = gaussian_detector()
    rows = X[:6].copy()
    rows[position % 6] = row
    scores = detector.anomaly_score(rows)
    predicted = detector.predict(rows)
    pv = detector.p_values(rows)
    broken = ~np.isfinite(scores)
    assert np.all(predicted[broken] == -1) and np.all(pv[broken] == 0)
    assert np.all(np.isfinite(scores[np.arange(6) != position % 6]))  # the other rows are unaffected


test_huge_cells, test_huge_cells_slow = _huge_cells


# ----------------------------------------------------------------------------- command line

from typer.testing import CliRunner  # noqa: E402

from vaeguard.cli import app  # noqa: E402

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, code: int = 1) -> str:
    """The result exited with `code` and printed one 'error: ...' line, no traceback."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    text = result.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1 and text.startswith("error: "), text
    return text


def session_dir(prefix: str) -> Path:
    """A folder for what a test session builds once (the cached models), removed when it ends."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@functools.lru_cache(maxsize=1)
def _cli_table_model() -> tuple[Path, float]:
    """A tiny gaussian table model with an id column, trained through the CLI (once)."""
    root = session_dir("vaeguard-hostile-")
    rng = np.random.default_rng(0)
    lines = ["id,a,b,c"] + [f"n{i},{x:.4f},{y:.4f},{x + y:.4f}" for i, (x, y) in enumerate(rng.normal(size=(120, 2)))]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    result = invoke("-q", "train", root / "train.csv", "-o", root / "model.vgm", "--id-column", "id", "--hidden-dims", "8", "--latent-dim", "2", "--epochs", "3", "--fpr", "0.2")
    assert result.exit_code == 0, result.output
    return root / "model.vgm", vaeguard.load(root / "model.vgm").threshold_


CELLS = ["0.5", "-1.25", "3", "1e20", "-1e20", "3e38", "3.4e38", "-3.4e38", "1e39", "nan", "inf", "-inf", "", "abc", "é", "0x10", " 2 ", "1e-400", '"1,5"', "1_000", "TRUE"]
cell = st.one_of(st.floats(-5, 5).map(lambda v: f"{v:.3f}"), st.sampled_from(CELLS))


@fast_and_slow(
    st.lists(st.tuples(cell, cell, cell), min_size=1, max_size=25),
    st.permutations(["id", "a", "b", "c"]),
    st.booleans(),
    st.sampled_from(["skip", "fail"]),
    st.booleans(),
)
def _csv_scoring(rows, order, gz, on_bad_row, old_output):
    model, threshold = _cli_table_model()
    model_bytes = model.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lines = [",".join(order)]
        for i, cells in enumerate(rows):
            values = {"id": f"id{i}", "a": cells[0], "b": cells[1], "c": cells[2]}
            lines.append(",".join(values[c] for c in order))
        raw = ("\n".join(lines) + "\n").encode("utf-8")
        data = root / ("data.csv.gz" if gz else "data.csv")
        data.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
        out = root / "scores.csv"
        if old_output:
            out.write_bytes(b"previous scores")
        before = snapshot(root)
        with no_process_started():
            result = invoke("-q", "score", model, data, "-o", out, "--on-bad-row", on_bad_row)
        assert model.read_bytes() == model_bytes
        assert not part_files(root)
        if result.exit_code != 0:
            assert on_bad_row == "fail"
            message = one_line_error(result)
            assert str(data) in message and "row" in message
            assert snapshot(root) == before  # no output written, an old one untouched
            return
        after = snapshot(root)
        assert {k: v for k, v in after.items() if k != b"scores.csv"} == {k: v for k, v in before.items() if k != b"scores.csv"}
        import csv

        with open(out, newline="", encoding="utf-8") as fh:
            scored = list(csv.DictReader(fh))
        assert [r["row"] for r in scored] == [str(i + 1) for i in range(len(rows))]
        assert [r["id"] for r in scored] == [f"id{i}" for i in range(len(rows))]  # failed rows keep their id
        for r in scored:
            if r["score"] == "" and r["is_anomaly"] == "1":  # a NaN score: written empty, flagged
                assert float(r["p_value"]) == 0 and "not finite" in r["error"]
                continue
            if r["score"] == "":  # a row that could not be read
                assert r["error"] and on_bad_row == "skip" and r["is_anomaly"] == "" and r["p_value"] == ""
                continue
            score, pv = float(r["score"]), float(r["p_value"])
            if not np.isfinite(score):
                assert r["is_anomaly"] == "1" and pv == 0 and "not finite" in r["error"]
            else:
                assert r["error"] == "" and 0 < pv <= 1 and r["is_anomaly"] in ("0", "1")


test_csv_scoring, test_csv_scoring_slow = _csv_scoring


def _tampered_cli_check(saved_model, change):
    path, _ = saved_model
    with tempfile.TemporaryDirectory() as tmp:
        tampered = Path(tmp, "t.vgm")
        _mutate(path, tampered, change)
        data = Path(tmp, "d.csv")
        data.write_text("a,b,c,d\n0.1,0.2,0.3,0.4\n")
        before = snapshot(Path(tmp))
        for args in (["info", tampered], ["score", tampered, data, "-o", Path(tmp, "s.csv")]):
            result = invoke("-q", *args)
            if result.exit_code != 0:
                one_line_error(result)
        assert not part_files(Path(tmp))
        for key, digest in before.items():
            assert snapshot(Path(tmp))[key] == digest


@FAST
@given(change=mutation)
def test_tampered_model_file_through_the_cli(saved_model, change):
    _tampered_cli_check(saved_model, change)


@pytest.mark.slow
@SLOW
@given(change=mutation)
def test_tampered_model_file_through_the_cli_slow(saved_model, change):
    _tampered_cli_check(saved_model, change)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "{data}", "-o", "{out}", "--hidden-dims", "a,b"], "--hidden-dims"),
        (["train", "{data}", "-o", "{out}", "--hidden-dims", "-3"], "--hidden-dims"),
        (["train", "{data}", "-o", "{out}", "--image-size", "8x8", "--channels", "2"], "--channels"),
        (["train", "{data}", "-o", "{out}", "--image-size", "100000x100000"], "--image-size"),
        (["calibrate", "{model}", "{data}", "--label-column", "a", "--rule", "bogus"], "--rule"),
        (["calibrate", "{model}", "{data}", "--label-column", "a", "--rule", "recall"], "--recall"),
        (["digits", "--normal", "11"], "--normal"),
        (["score", "{model}", "{data}", "-o", "{out}", "--on-bad-row", "maybe"], "--on-bad-row"),
    ],
)
def test_usage_errors_exit_2_without_reprs(tmp_path, args, message):
    model, _ = _cli_table_model()
    data = tmp_path / "d.csv"
    data.write_text("a,b,c\n1,2,3\n")
    before = model.read_bytes()
    result = invoke(*[a.format(data=data, out=tmp_path / "o.vgm", model=model) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert "(" + "'" not in result.output  # no Python tuple reprs such as ('f1', ...)
    assert model.read_bytes() == before and not (tmp_path / "o.vgm").exists()


@pytest.mark.parametrize("command", ["score", "train", "calibrate", "evaluate", "score-model", "calibrate-link", "sample", "interpolate"])
def test_every_writing_command_refuses_to_overwrite_its_input(tmp_path, command):
    model, _ = _cli_table_model()
    local_model = tmp_path / "m.vgm"
    local_model.write_bytes(model.read_bytes())
    data = tmp_path / "d.csv"
    data.write_text("id,a,b,c,label\nx,0.1,0.2,0.3,0\ny,0.2,0.1,0.3,1\nz,0.0,0.1,0.1,0\n")
    link = tmp_path / "link.csv"
    link.symlink_to(data)
    args = {
        "score": ["score", local_model, data, "-o", data],
        "score-model": ["score", local_model, data, "-o", local_model],
        "train": ["train", data, "-o", data, "--epochs", "1"],
        "calibrate": ["calibrate", local_model, data, "--label-column", "label", "-o", data],
        "calibrate-link": ["calibrate", local_model, data, "--label-column", "label", "-o", link],
        "evaluate": ["evaluate", local_model, tmp_path / "metrics.json", "--label-column", "label", "-o", tmp_path],
        "sample": ["sample", local_model, "-o", local_model, "--n", "4"],
        "interpolate": ["interpolate", local_model, "x", "y", "--data", data, "-o", data],
    }[command]
    if command == "evaluate":
        (tmp_path / "metrics.json").write_bytes(b"id,a,b,c,label\nx,0.1,0.2,0.3,0\n")  # data named like a report file
        data = tmp_path / "metrics.json"
    before = snapshot(tmp_path)
    message = one_line_error(invoke("-q", *args))
    assert "refusing to overwrite" in message
    assert snapshot(tmp_path) == before and link.is_symlink()


def test_calibrate_refuses_broken_scores_and_all_anomaly_labels_leaving_the_model(tmp_path):
    model, _ = _cli_table_model()
    local = tmp_path / "m.vgm"
    local.write_bytes(model.read_bytes())
    huge = tmp_path / "huge.csv"
    huge.write_text("id,a,b,c\n" + "".join(f"r{i},{v},0.1,0.2\n" for i, v in enumerate(["0.1", "3e38", "0.2", "0.3"])))
    labelled = tmp_path / "ones.csv"
    labelled.write_text("id,a,b,c,label\n" + "".join(f"r{i},0.{i},0.1,0.2,1\n" for i in range(5)))
    before = local.read_bytes()
    assert "score NaN or infinity" in one_line_error(invoke("-q", "calibrate", local, huge))
    assert "every label is 1" in one_line_error(invoke("-q", "calibrate", local, labelled, "--label-column", "label"))
    assert local.read_bytes() == before and not part_files(tmp_path)


def test_truncated_gzip_is_a_clear_error(tmp_path):
    model, _ = _cli_table_model()
    body = "id,a,b,c\n" + "".join(f"r{i},{i % 7 / 7:.5f},{i % 5 / 5:.5f},{i % 3 / 3:.5f}\n" for i in range(60000))
    packed = gzip.compress(body.encode(), mtime=0)
    data = tmp_path / "cut.csv.gz"
    data.write_bytes(packed[: len(packed) // 2])
    message = one_line_error(invoke("-q", "score", model, data, "-o", tmp_path / "s.csv"))
    assert str(data) in message and "ended before the end-of-stream marker" in message
    assert not (tmp_path / "s.csv").exists()


def test_gz_output_is_gzip(tmp_path):
    model, _ = _cli_table_model()
    data = tmp_path / "d.csv"
    data.write_text("id,a,b,c\nx,0.1,0.2,0.3\n")
    result = invoke("-q", "score", model, data, "-o", tmp_path / "s.csv.gz")
    assert result.exit_code == 0, result.output
    assert gzip.decompress((tmp_path / "s.csv.gz").read_bytes()).decode().startswith("row,id,score")


def test_train_names_left_out_columns_and_keeps_the_label_column_out(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["id,a,b,empty,flag,infinite,label"]
    lines += [f"r{i},{x:.3f},{y:.3f},,{'true' if i % 2 else 'false'},inf,{i % 2}" for i, (x, y) in enumerate(rng.normal(size=(40, 2)))]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    result = invoke("-q", "train", tmp_path / "t.csv", "-o", tmp_path / "m.vgm", "--id-column", "id", "--label-column", "label", "--epochs", "1", "--hidden-dims", "4", "--latent-dim", "2", "--fpr", "0.2")
    assert result.exit_code == 0, result.output
    for line in ("left out column 'empty': every cell is empty", "left out column 'infinite': infinite values"):
        assert line in result.output
    spec = vaeguard.load(tmp_path / "m.vgm").input_spec_
    # true/false values are a yes/no column: categorical
    assert spec.columns == ("a", "b", "flag") and spec.levels[2] == ("false", "true")
    assert spec.label_column == "label" and spec.id_column == "id"


def test_image_folder_without_a_normal_subfolder_says_to_use_normal_label(tmp_path):
    for cls in ("good", "bad"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (6, 6), 40 * i + (cls == "bad")).save(tmp_path / "imgs" / cls / f"{i}.png")
    assert invoke("-q", "train", tmp_path / "imgs", "-o", tmp_path / "m.vgm", "--epochs", "1", "--hidden-dims", "4", "--latent-dim", "2", "--fpr", "0.4").exit_code == 0
    message = one_line_error(invoke("-q", "evaluate", tmp_path / "m.vgm", tmp_path / "imgs", "-o", tmp_path / "report"))
    assert "--normal-label" in message and "good" in message and "y_true" not in message
    result = invoke("-q", "score", tmp_path / "m.vgm", tmp_path / "imgs", "-o", tmp_path / "s.csv", "--heatmaps", tmp_path / "maps")
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(tmp_path / "maps").as_posix() for p in (tmp_path / "maps").rglob("*.png")) == sorted(
        f"{cls}/{i}.png" for cls in ("good", "bad") for i in range(4)
    )  # name.png, not name.png.png
    assert invoke("-q", "score", tmp_path / "m.vgm", tmp_path / "imgs", "-o", tmp_path / "s.csv", "--heatmaps", tmp_path / "imgs" / "good").exit_code == 2


def test_offline_mnist_error_names_all_four_files(tmp_path):
    from vaeguard.digits import mnist_digits
    from vaeguard.mnist import FILES

    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError) as info:
        mnist_digits(tmp_path, download=False)
    for name in (n for pair in FILES.values() for n in pair):
        assert name in str(info.value)


_CLI_RUN = """
import signal, sys
# as run from a terminal, whatever this test run inherited (see _WRITER)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv = ["vaeguard", "-q", "score", *sys.argv[1:]]
from vaeguard.__main__ import run
run()
"""


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)])
def test_cli_interrupted_mid_write_prints_one_line_and_leaves_nothing(tmp_path, signum, code):
    model, _ = _cli_table_model()
    data = tmp_path / "big.csv"
    rows = "".join(f"r{i},{i % 7 / 7:.4f},{i % 5 / 5:.4f},{i % 3 / 3:.4f}\n" for i in range(400_000))
    data.write_text("id,a,b,c\n" + rows)
    out = tmp_path / "scores.csv"
    out.write_bytes(b"previous scores")
    proc = subprocess.Popen([sys.executable, "-c", _CLI_RUN, str(model), str(data), "-o", str(out), "--chunk-size", "2000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not part_files(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not part_files(tmp_path):
        proc.kill()
        pytest.fail(f"the run never started writing (exit {proc.wait()}): {proc.stderr.read().decode()}")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == code, err
    assert err.strip().splitlines() == ["interrupted: no partial output was written"], err
    assert out.read_bytes() == b"previous scores" and not part_files(tmp_path)


def test_progress_bar_shows_a_real_rate(tmp_path):
    model, _ = _cli_table_model()
    data = tmp_path / "d.csv"
    data.write_text("id,a,b,c\n" + "".join(f"r{i},0.1,0.2,0.3\n" for i in range(3000)))
    result = invoke("score", model, data, "-o", tmp_path / "s.csv", "--chunk-size", "1000")
    assert result.exit_code == 0, result.output
    import re

    rates = [int(r.replace(",", "")) for r in re.findall(r"3,000 rows\s+([\d,]+) rows/s", result.output)]
    assert rates and rates[-1] > 0, result.output  # rich's own speed showed 0 rows/s with few advances
