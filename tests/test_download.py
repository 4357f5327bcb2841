"""The download stage's logic: official archive by URL (md5, truncation, retries) and a mirror."""

from __future__ import annotations

import hashlib
import http.server
import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from src.data.raw import DataError, install_raw, read_batch
from tests.conftest import make_archive


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def archive(small_batches, tmp_path_factory) -> Path:
    return make_archive(
        small_batches / "cifar-10-batches-py", tmp_path_factory.mktemp("arc") / "cifar-10-python.tar.gz"
    )


def _install(out, url, md5, mirror=None, **kw):
    logs: list[str] = []
    kw.setdefault("retries", 0)
    path = install_raw(out, url, md5, mirror, backoff_s=0, progress=False, log=logs.append, expect_rows=200, **kw)
    return path, logs


def test_archive_from_url_good_md5(archive, small_batches, tmp_path):
    path, logs = _install(tmp_path / "raw", archive.as_uri(), _md5(archive))
    x, y = read_batch(path / "data_batch_3")
    x0, y0 = read_batch(small_batches / "cifar-10-batches-py" / "data_batch_3")
    assert np.array_equal(x, x0) and np.array_equal(y, y0)
    assert any("NOT the official" in line for line in logs)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["cifar-10-batches-py"]


def test_bad_md5_fails_and_leaves_nothing(archive, tmp_path):
    with pytest.raises(DataError, match=r"md5 mismatch: .*\)\. The file arrived whole each time: check download.url"):
        _install(tmp_path / "raw", archive.as_uri(), "0" * 32, retries=1)
    assert not (tmp_path / "raw").exists()
    assert list(tmp_path.iterdir()) == []  # no temp folder left behind


def test_truncated_archive_is_a_clear_error(archive, tmp_path):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or corrupted"):
        _install(tmp_path / "raw", cut.as_uri(), _md5(cut))
    assert not (tmp_path / "raw").exists()


def test_network_down_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="CIFAR10_MIRROR"):
        _install(tmp_path / "raw", "http://127.0.0.1:9/cifar.tar.gz", "0" * 32, retries=1, timeout_s=2)


def test_mirror_folder_and_archive(small_batches, archive, tmp_path):
    path, logs = _install(tmp_path / "a", "unused", "0" * 32, mirror=str(small_batches))
    assert (path / "test_batch").is_file() and any("mirror" in line for line in logs)
    mirror2 = tmp_path / "m2"
    mirror2.mkdir()
    shutil.copy(archive, mirror2 / "cifar-10-python.tar.gz")
    path2, _ = _install(tmp_path / "b", "unused", "0" * 32, mirror=str(mirror2))
    assert _md5(path2 / "data_batch_1") == _md5(small_batches / "cifar-10-batches-py" / "data_batch_1")
    path3, _ = _install(tmp_path / "c", "unused", "0" * 32, mirror=str(mirror2 / "cifar-10-python.tar.gz"))
    assert _md5(path3 / "data_batch_1") == _md5(path2 / "data_batch_1")  # the archive itself as the mirror
    (mirror2 / "cifar-10-python.tar.gz").write_bytes(archive.read_bytes()[:5000])
    with pytest.raises(DataError, match="corrupted archive .*; replace the mirror's copy, or unset CIFAR10_MIRROR"):
        _install(tmp_path / "d", "unused", "0" * 32, mirror=str(mirror2))


def test_missing_mirror(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no such folder; point it at"):
        _install(tmp_path / "raw", "unused", "0" * 32, mirror=str(tmp_path / "nope"))
    monkeypatch.chdir(tmp_path)  # a relative path: a queued run starts elsewhere, so the line says where it looked
    with pytest.raises(DataError) as e:
        _install(tmp_path / "raw", "unused", "0" * 32, mirror="../shared/cifar10")
    assert str(e.value).startswith(
        f"CIFAR10_MIRROR=../shared/cifar10: no such folder (relative to {tmp_path}: give an absolute path for "
        "`dvc queue`); point it at"
    )


@pytest.mark.parametrize(
    "damage,match",
    [
        ("garbage", "not a readable CIFAR-10 pickle"),
        ("shape", "expected uint8"),
        ("labels", "labels out of range"),
        ("str_labels", r"labels are <U\d+ \(\d+,\), expected a list of integers 0-9"),
        ("column_labels", r"labels are int64 \(\d+, 1\), expected a list of integers 0-9"),
        ("float_labels", r"labels are float64 \(\d+,\), expected a list of integers 0-9"),
        ("missing", "cifar-10-batches-py/ lacks data_batch_2; CIFAR-10's python layout has all of them"),
        ("names", r"batches.meta names the classes \['plane', 'car',"),
    ],
)
def test_corrupted_mirror_names_the_file(small_batches, tmp_path, damage, match):
    """One line naming the mirror and the file in it (not the temporary folder it was copied to)."""
    mirror = tmp_path / "m"
    shutil.copytree(small_batches, mirror)
    f = mirror / "cifar-10-batches-py" / ("batches.meta" if damage == "names" else "data_batch_2")
    if damage == "garbage":
        f.write_bytes(f.read_bytes()[:1000])
    elif damage == "missing":
        f.unlink()
    elif damage == "names":  # another naming of the same ten classes: the subset picks by CIFAR-10's names
        d = pickle.loads(f.read_bytes(), encoding="latin1")
        d["label_names"] = ["plane", "car", *d["label_names"][2:]]
        f.write_bytes(pickle.dumps(d))
    else:
        d = pickle.loads(f.read_bytes(), encoding="latin1")
        if damage == "shape":
            d["data"] = d["data"][:, :100]
        elif damage == "str_labels":  # hand-made files: labels as names, as a column, as floats
            d["labels"] = [str(y) for y in d["labels"]]
        elif damage == "column_labels":
            d["labels"] = np.asarray(d["labels"], dtype=np.int64)[:, None]
        elif damage == "float_labels":
            d["labels"] = [float(y) for y in d["labels"]]
        else:
            d["labels"][0] = 12
        f.write_bytes(pickle.dumps(d))
    out = tmp_path / "raw"
    out.mkdir()
    (out / "keep").write_text("an earlier good download")  # must survive a failed attempt
    with pytest.raises(DataError, match=match) as e:
        _install(out, "unused", "0" * 32, mirror=str(mirror))
    assert str(e.value).startswith(f"CIFAR10_MIRROR={mirror}: cifar-10-batches-py")
    assert f.name in str(e.value) and ".tmp-" not in str(e.value) and "\n" not in str(e.value)
    assert (out / "keep").read_text() == "an earlier good download"


def test_an_empty_batch_reads_as_no_images(tmp_path):
    """np.asarray([]) is float64: no labels is not a wrong label type."""
    f = tmp_path / "data_batch_1"
    f.write_bytes(pickle.dumps({"data": np.zeros((0, 3072), np.uint8), "labels": []}))
    data, labels = read_batch(f)
    assert data.shape == (0, 3, 32, 32) and labels.shape == (0,)


def test_a_read_only_mirror_gives_a_copy_that_can_be_moved_and_replaced(small_batches, tmp_path):
    """A class's shared mirror is often read-only: the copy must not keep its modes (a read-only
    folder cannot be renamed into place by an ordinary user, nor its files replaced on a rerun)."""
    mirror = tmp_path / "m"
    shutil.copytree(small_batches, mirror)
    for p in [*mirror.rglob("*")][::-1]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        path, _ = _install(tmp_path / "raw", "unused", "0" * 32, mirror=str(mirror / "cifar-10-batches-py"))
        assert path.stat().st_mode & 0o200 and all(f.stat().st_mode & 0o200 for f in path.iterdir())
        _install(tmp_path / "raw", "unused", "0" * 32, mirror=str(mirror))  # a second run replaces the first
    finally:
        for p in mirror.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Fails the first `fail` requests (500, then a cut-off body), then serves the archive."""

    payload = b""
    fail = 2
    seen = 0

    def do_GET(self):  # noqa: N802
        cls = type(self)
        cls.seen += 1
        if cls.seen == 1:
            self.send_error(500)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(cls.payload)))
        self.end_headers()
        if cls.seen <= cls.fail:
            self.wfile.write(cls.payload[:100])  # connection drops mid-body
            return
        self.wfile.write(cls.payload)

    def log_message(self, *a):
        pass


def test_flaky_server_retries_then_succeeds(archive, tmp_path):
    _Flaky.payload, _Flaky.seen = archive.read_bytes(), 0
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/cifar-10-python.tar.gz"
        path, logs = _install(tmp_path / "raw", url, _md5(archive), retries=3, timeout_s=5)
        assert (path / "batches.meta").is_file()
        assert _Flaky.seen == 3
        assert sum("retrying" in line for line in logs) == 2
        # and with too few retries, a clear error and no data
        _Flaky.seen = 0
        with pytest.raises(DataError, match="after 2 attempts"):
            _install(tmp_path / "raw2", url, _md5(archive), retries=1, timeout_s=5)
        assert not (tmp_path / "raw2").exists()
    finally:
        srv.shutdown()
