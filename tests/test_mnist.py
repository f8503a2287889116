"""MNIST: digit lists, IDX parsing, loading the shared copy, and downloading from local servers.

Downloads are served by a ThreadingHTTPServer on 127.0.0.1 from the shared files; the tests
never reach the internet.
"""

import gzip
import http.server
import os
import shutil
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from vaeguard import mnist
from vaeguard.errors import DataError, DownloadError
from vaeguard.mnist import (
    FILES,
    MD5,
    download_mnist,
    file_md5,
    load_mnist,
    parse_digits,
    read_idx,
    resolve_mnist_dir,
)

SHARED = Path(
    os.environ.get(mnist.MNIST_DIR_ENV) or Path(__file__).parents[2] / "shared/data/mnist"
)
needs_shared = pytest.mark.skipif(
    not all((SHARED / name).is_file() for name in MD5),
    reason=f"shared MNIST files not found in {SHARED} (set {mnist.MNIST_DIR_ENV} to their folder)",
)

TRAIN_LABELS, TEST_LABELS = FILES["train"][1], FILES["test"][1]
TEST_IMAGES = FILES["test"][0]


# ---------------------------------------------------------------- parse_digits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", [3]),
        ("0-8", list(range(9))),
        ("0,2,5-7", [0, 2, 5, 6, 7]),
        (" 7 , 1 - 2 ", [1, 2, 7]),
        ("5,5,4-6", [4, 5, 6]),
        ("0-9", list(range(10))),
        ("4-4", [4]),
    ],
)
def test_parse_digits(text, expected):
    assert parse_digits(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a", "cannot read 'a'"),
        ("1,,2", "cannot read ''"),
        ("10", "10 .* not a digit"),
        ("3-12", "12 .* not a digit"),
        ("7-3", "runs backwards"),
        ("-3", "cannot read"),
        ("1.5", "cannot read"),
        ("\u0663", "cannot read"),  # ARABIC-INDIC DIGIT THREE
    ],
)
def test_parse_digits_rejects(text, message):
    with pytest.raises(ValueError, match=message):
        parse_digits(text)


# ---------------------------------------------------------------- read_idx


def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_read_idx_raw_and_gzip_by_content_not_suffix(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = _idx_bytes(images, 0x08)
    cases = {
        "raw.idx": raw,
        "raw-named.gz": raw,
        "packed.gz": gzip.compress(raw),
        "packed-no-suffix": gzip.compress(raw),
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        got = read_idx(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == (2, 3, 4), name
        np.testing.assert_array_equal(got, images)


@pytest.mark.parametrize(
    ("code", "values"),
    [
        (0x09, np.array([-3, 0, 127], dtype=np.int8)),
        (0x0B, np.array([-300, 2, 32000], dtype=np.int16)),
        (0x0C, np.array([[1, -2], [70000, -70000]], dtype=np.int32)),
        (0x0D, np.array([0.5, -1.25, 3e9], dtype=np.float32)),
        (0x0E, np.array([np.pi, -1e300], dtype=np.float64)),
    ],
)
def test_read_idx_other_types_come_back_native_endian(tmp_path, code, values):
    path = tmp_path / "x.idx"
    path.write_bytes(_idx_bytes(values, code))
    got = read_idx(path)
    assert got.dtype == values.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, values)
    got[...] = 0  # a writable copy, not a view of read-only bytes


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-1], "truncated: shape \\(2, 3\\) needs 6 payload bytes, found 5"),
        (lambda b: b + b"\x00", "longer than its header says"),
        (lambda b: b[:10], "truncated inside its header"),
        (lambda b: b[:3], "truncated: 3 bytes"),
        (lambda b: b"\x01" + b[1:], "not an IDX file: magic number starts 0100"),
        (lambda b: b[:2] + b"\x0a" + b[3:], "unknown data type code 0x0a"),
        (lambda b: b[:3] + b"\x00", "0 dimensions"),
    ],
)
def test_read_idx_rejects_bad_files_naming_them(tmp_path, mutate, message):
    good = _idx_bytes(np.zeros((2, 3), dtype=np.uint8), 0x08)
    for name, payload in (("bad.idx", mutate(good)), ("bad.idx.gz", gzip.compress(mutate(good)))):
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(DataError, match=message) as info:
            read_idx(path)
        assert str(path) in str(info.value)


def test_read_idx_rejects_truncated_gzip_and_missing_file(tmp_path):
    packed = gzip.compress(_idx_bytes(np.zeros((50, 50), dtype=np.uint8), 0x08))
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nope.gz")


# ---------------------------------------------------------------- load_mnist on tiny files


def _write_split(directory: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    image_name, label_name = FILES[split]
    (directory / image_name).write_bytes(gzip.compress(_idx_bytes(images, 0x08)))
    (directory / label_name).write_bytes(gzip.compress(_idx_bytes(labels, 0x08)))


def test_load_mnist_scales_and_flattens_tiny_split(tmp_path):
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[1, 27, 27], images[2, 5, 6] = 255, 51, 1
    _write_split(tmp_path, "test", images, np.array([4, 0, 9], dtype=np.uint8))
    X, y = load_mnist("test", tmp_path, download=False)
    assert X.shape == (3, 784) and X.dtype == np.float32
    assert y.dtype == np.int64 and y.tolist() == [4, 0, 9]
    assert X[0, 0] == 1.0 and X[1, 783] == np.float32(0.2)
    assert X[2, 5 * 28 + 6] == np.float32(1 / 255)
    assert np.count_nonzero(X) == 3


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8), "3 images but .* 2 labels"),
        (np.zeros((2, 28, 28), np.uint8), np.array([1, 10], np.uint8), "label 10 at row 1"),
        (np.zeros((2, 28, 27), np.uint8), np.zeros(2, np.uint8), "28x28 uint8 images"),
        (np.zeros((2, 28, 28), np.uint8), np.zeros((2, 1), np.uint8), "uint8 labels"),
    ],
)
def test_load_mnist_rejects_inconsistent_files(tmp_path, images, labels, message):
    _write_split(tmp_path, "train", images, labels)
    with pytest.raises(DataError, match=message) as info:
        load_mnist("train", tmp_path, download=False)
    assert str(tmp_path) in str(info.value)


def test_load_mnist_rejects_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="unknown MNIST split 'validation'"):
        load_mnist("validation", tmp_path)


# ---------------------------------------------------------------- resolve_mnist_dir


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No MNIST folder from the environment; the cache points into tmp_path."""
    monkeypatch.delenv(mnist.MNIST_DIR_ENV, raising=False)
    monkeypatch.setenv(mnist.CACHE_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_default_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv(mnist.CACHE_DIR_ENV, raising=False)
    assert mnist.default_cache_dir() == tmp_path / "home/.cache/vaeguard/mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mnist.default_cache_dir() == tmp_path / "xdg/vaeguard/mnist"
    monkeypatch.setenv(mnist.CACHE_DIR_ENV, str(tmp_path / "mine"))
    assert mnist.default_cache_dir() == tmp_path / "mine"


def test_explicit_dir_lacking_files_is_named_and_never_downloaded_into(
    clean_env, tmp_path, monkeypatch
):
    calls = []
    monkeypatch.setattr(mnist, "download_mnist", lambda *a, **k: calls.append((a, k)))
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / TEST_IMAGES).write_bytes(b"x")
    with pytest.raises(DataError, match="lacks t10k-labels-idx1-ubyte.gz") as info:
        resolve_mnist_dir(user_dir, splits=("test",))
    assert str(user_dir) in str(info.value) and TEST_IMAGES not in str(info.value).split(";")[0]
    with pytest.raises(DataError, match="does not exist"):
        resolve_mnist_dir(tmp_path / "absent")
    monkeypatch.setenv(mnist.MNIST_DIR_ENV, str(user_dir))
    with pytest.raises(DataError, match=f"\\${mnist.MNIST_DIR_ENV} {user_dir} lacks"):
        resolve_mnist_dir()
    assert calls == []


def test_resolve_precedence_explicit_then_env_then_cache(clean_env, tmp_path, monkeypatch):
    calls = []

    def fake_download(dest_dir, **kwargs):
        calls.append((Path(dest_dir), kwargs.get("files")))
        return Path(dest_dir)

    monkeypatch.setattr(mnist, "download_mnist", fake_download)
    explicit, env_dir = tmp_path / "explicit", tmp_path / "env"
    for directory in (explicit, env_dir):
        directory.mkdir()
        for name in FILES["test"]:
            (directory / name).write_bytes(b"x")
    monkeypatch.setenv(mnist.MNIST_DIR_ENV, str(env_dir))
    assert resolve_mnist_dir(explicit, splits=("test",)) == explicit
    assert resolve_mnist_dir(splits=("test",)) == env_dir
    monkeypatch.delenv(mnist.MNIST_DIR_ENV)
    assert calls == []
    assert resolve_mnist_dir(splits=("test",)) == clean_env
    assert calls == [(clean_env, list(FILES["test"]))]
    with pytest.raises(DataError, match="MNIST cache .* allow downloading"):
        resolve_mnist_dir(download=False)


# ---------------------------------------------------------------- the shared copy


def test_md5_table_accepts_both_train_image_sums():
    assert MD5[FILES["train"][0]] == (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "cca5a2480530c91fbcc4f0ac2eb7efb5",
    )
    assert all(len(sums) == 1 for name, sums in MD5.items() if name != FILES["train"][0])


@needs_shared
def test_shared_files_pass_the_checksums():
    for name, sums in MD5.items():
        assert file_md5(SHARED / name) in sums, name


@pytest.fixture(scope="module")
def shared_train():
    return load_mnist("train", SHARED, download=False)


@needs_shared
def test_load_shared_train(shared_train):
    X, y = shared_train
    assert X.shape == (60000, 784) and X.dtype == np.float32
    assert y.shape == (60000,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert abs(float(X.mean()) - 0.13066) < 1e-4
    assert np.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@needs_shared
def test_load_shared_test_via_env(monkeypatch):
    monkeypatch.setenv(mnist.MNIST_DIR_ENV, str(SHARED))
    X, y = load_mnist("test", download=False)
    assert X.shape == (10000, 784) and X.dtype == np.float32
    assert X.min() == 0.0 and X.max() == 1.0
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---------------------------------------------------------------- downloads from local servers


class _Server:
    """A local HTTP server for MNIST files that can fail, corrupt, and counts requests."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.fail_first = 0  # answer this many requests with 503 first
        self.status = None  # answer every request with this status instead
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(name)
                if server.status is not None or server.fail_first > 0:
                    server.fail_first -= 1
                    self.send_error(server.status or 503)
                    return
                if name not in server.files:
                    self.send_error(404)
                    return
                body = server.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mnist/"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def no_proxy(monkeypatch):
    """Talk to 127.0.0.1 directly even where the environment configures a proxy."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def serve(no_proxy):
    """Start local servers: serve(files) -> _Server, shut down after the test."""
    servers = []

    def start(files):
        servers.append(_Server(files))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def dead_url():
    """A URL on a local port nobody listens on: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def _shared(*names):
    return {name: (SHARED / name).read_bytes() for name in names}


def _no_sleep(seconds):
    raise AssertionError(f"unexpected sleep({seconds})")


def _leftovers(directory: Path):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@needs_shared
def test_download_real_test_split_then_load(serve, tmp_path):
    server = serve(_shared(*FILES["test"]))
    seen = {}
    dest = download_mnist(
        tmp_path / "data",
        mirrors=[server.url],
        files=FILES["test"],
        progress=lambda name, done, total: seen.__setitem__(name, (done, total)),
        sleep=_no_sleep,
    )
    assert dest == tmp_path / "data"
    for name in FILES["test"]:
        assert file_md5(dest / name) in MD5[name]
        size = (SHARED / name).stat().st_size
        assert seen[name] == (size, size)
    X, y = load_mnist("test", dest, download=False)
    assert X.shape == (10000, 784) and y.shape == (10000,)
    assert sorted(server.requests) == sorted(FILES["test"])
    assert _leftovers(dest) == []


@needs_shared
def test_download_accepts_the_alternate_train_images_sum(serve, tmp_path):
    name = FILES["train"][0]
    server = serve(_shared(name))
    download_mnist(tmp_path, mirrors=[server.url], files=[name], sleep=_no_sleep)
    assert file_md5(tmp_path / name) == "cca5a2480530c91fbcc4f0ac2eb7efb5"


@needs_shared
def test_download_retries_503_with_exponential_backoff(serve, tmp_path):
    server = serve(_shared(TEST_LABELS))
    server.fail_first = 2
    sleeps = []
    download_mnist(
        tmp_path, mirrors=[server.url], files=[TEST_LABELS], retries=3, backoff=0.5,
        sleep=sleeps.append,
    )
    assert sleeps == [0.5, 1.0]
    assert server.requests == [TEST_LABELS] * 3
    assert (tmp_path / TEST_LABELS).read_bytes() == (SHARED / TEST_LABELS).read_bytes()


@needs_shared
def test_download_gives_up_on_a_mirror_after_its_retries(serve, tmp_path):
    flaky, good = serve(_shared(TEST_LABELS)), serve(_shared(TEST_LABELS))
    flaky.status = 503
    not_found = serve({})
    sleeps = []
    download_mnist(
        tmp_path, mirrors=[flaky.url, not_found.url, good.url], files=[TEST_LABELS],
        retries=2, backoff=0.25, sleep=sleeps.append,
    )
    assert len(flaky.requests) == 2 and sleeps == [0.25]
    assert len(not_found.requests) == 1  # a 404 is not retried
    assert good.requests == [TEST_LABELS]


@needs_shared
def test_corrupted_download_is_discarded_and_next_mirror_used(serve, tmp_path):
    files = _shared(TRAIN_LABELS, TEST_LABELS)
    corrupt = {
        name: body[:100] + bytes([body[100] ^ 0xFF]) + body[101:] for name, body in files.items()
    }
    bad, good = serve(corrupt), serve(files)
    download_mnist(
        tmp_path, mirrors=[bad.url, good.url], files=[TRAIN_LABELS, TEST_LABELS], sleep=_no_sleep,
    )
    for name in (TRAIN_LABELS, TEST_LABELS):
        assert file_md5(tmp_path / name) in MD5[name]
    assert bad.requests == [TRAIN_LABELS, TEST_LABELS]  # each tried once, never retried
    assert good.requests == [TRAIN_LABELS, TEST_LABELS]
    assert _leftovers(tmp_path) == []


@needs_shared
def test_all_mirrors_corrupt_keeps_no_file(serve, tmp_path):
    body = (SHARED / TEST_LABELS).read_bytes()
    bad = serve({TEST_LABELS: body[:-1] + bytes([body[-1] ^ 1])})
    with pytest.raises(DownloadError, match="checksum mismatch") as info:
        download_mnist(tmp_path, mirrors=[bad.url], files=[TEST_LABELS], sleep=_no_sleep)
    assert "No mirror served a good copy" in str(info.value)
    assert "offline" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_all_mirrors_dead_says_offline_and_how_to_fix(dead_url, tmp_path, no_proxy):
    sleeps = []
    dest = tmp_path / "cache"
    with pytest.raises(DownloadError) as info:
        download_mnist(dest, mirrors=[dead_url, dead_url + "other/"], retries=2, backoff=0.1,
                       sleep=sleeps.append, timeout=5)
    message = str(info.value)
    assert "could not download train-images-idx3-ubyte.gz from any mirror" in message
    assert message.count("cannot connect") == 2
    assert dead_url + "other/train-images-idx3-ubyte.gz" in message
    assert "this machine looks offline" in message
    assert f"download the four files by hand into {dest}" in message
    assert "--data-dir" in message and mnist.MNIST_DIR_ENV in message
    assert sleeps == [0.1, 0.1]  # one retry on each mirror
    assert isinstance(info.value, OSError)


@needs_shared
def test_present_good_files_are_not_fetched_again(serve, tmp_path):
    shutil.copy(SHARED / TRAIN_LABELS, tmp_path / TRAIN_LABELS)
    (tmp_path / TEST_LABELS).write_bytes(b"stale partial download")
    server = serve(_shared(TRAIN_LABELS, TEST_LABELS))
    both = [TRAIN_LABELS, TEST_LABELS]
    download_mnist(tmp_path, mirrors=[server.url], files=both, sleep=_no_sleep)
    assert server.requests == [TEST_LABELS]  # the bad copy is replaced, the good one kept
    assert file_md5(tmp_path / TEST_LABELS) in MD5[TEST_LABELS]
    download_mnist(tmp_path, mirrors=[server.url], files=both, sleep=_no_sleep)
    assert server.requests == [TEST_LABELS]


def test_download_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown MNIST file"):
        download_mnist(tmp_path, files=["cifar.tar.gz"])
    with pytest.raises(ValueError, match="retries must be at least 1"):
        download_mnist(tmp_path, retries=0)
