"""Fetch path against a small HTTP server on 127.0.0.1: good, corrupted and truncated files, offline.

No traffic leaves 127.0.0.1: a temporary registry points every entry at the local server.
"""
import bz2
import hashlib
import http.server
import socket
import threading

import pytest
import torch

D = pytest.importorskip("precond_core.datasets")

TEXT = b"".join(b"%d 1:%d 3:0.5\n" % ((-1) ** i, i + 1) for i in range(50))   # 50 x 3, labels +-1
BZ = bz2.compress(TEXT)
SHA = hashlib.sha256(TEXT).hexdigest()
SHA_BZ = hashlib.sha256(BZ).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        if name not in self.files:
            self.send_error(404)
            return
        body, mode = self.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncated":
            self.wfile.write(body[: len(body) // 2])   # promise the whole length, send half, close
        elif mode == "corrupted":
            self.wfile.write(body[:-2] + b"9\n")
        else:
            self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.files = {
        "good": (TEXT, "ok"), "corrupt": (TEXT, "corrupted"), "trunc": (TEXT, "truncated"),
        "good.bz2": (BZ, "ok"), "bad.bz2": (b"not bz2 data at all", "ok"),
    }
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def env(tmp_path, monkeypatch, server):
    """Temporary registry with entries served by the local server; data dir in tmp."""
    data = tmp_path / "data"
    monkeypatch.setenv("PRECOND_DATA_DIR", str(data))
    for var in ("PRECOND_DOWNLOAD", "PRECOND_DATA_URL"):
        monkeypatch.delenv(var, raising=False)
    entries = {
        "good": ("good", SHA, ""), "corrupt": ("corrupt", SHA, ""), "trunc": ("trunc", SHA, ""),
        "nosha": ("good", "", ""), "zipped": ("good.bz2", SHA_BZ, "bz2"), "badzip": ("bad.bz2", "", "bz2"),
    }
    lines = []
    for name, (file, sha, comp) in entries.items():
        lines.append(f'[{name}]\ntask = "binary"\nn_samples = 50\nn_features = 3\nsource = "download"\n'
                     f'file = "{file}"\nsha256 = "{sha}"\ncompression = "{comp}"\nurl = "{server}/{file}"\n'
                     'license = "test"\nattribution = "test"\n')
    reg = tmp_path / "registry.toml"
    reg.write_text("\n".join(lines))
    monkeypatch.setenv("PRECOND_REGISTRY", str(reg))
    return data


def _leftovers(data):
    raw = data / "raw"
    return sorted(p.name for p in raw.iterdir()) if raw.exists() else []


def test_good_file_is_fetched_verified_and_loaded(env, capsys):
    path = D.fetch("good", progress=True)
    assert path == env / "raw" / "good" and path.read_bytes() == TEXT
    assert _leftovers(env) == ["good"]                        # no temporary files remain
    A, b = D.load("good")
    assert A.shape == (50, 3) and torch.equal(A[:, 0], torch.arange(1, 51, dtype=torch.float64))
    assert b.tolist() == [(-1.0) ** i for i in range(50)]
    assert D.available()["good"]


def test_corrupted_file_is_refused_and_nothing_is_left(env):
    with pytest.raises(D.ChecksumError) as ei:
        D.fetch("corrupt", progress=False)
    e = ei.value
    actual = hashlib.sha256(TEXT[:-2] + b"9\n").hexdigest()
    assert e.expected == SHA and e.actual == actual
    msg = str(e)
    assert "'corrupt'" in msg and SHA in msg and actual in msg and "PRECOND_DATA_DIR" in msg
    assert str(env / "raw" / "corrupt") in msg                 # where to put the file by hand
    assert _leftovers(env) == []


def test_truncated_response_is_refused_and_nothing_is_left(env):
    with pytest.raises(D.DatasetUnavailable, match="truncated"):
        D.fetch("trunc", progress=False)
    assert _leftovers(env) == []


def test_offline_gives_clear_error(env, monkeypatch):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                                  # nothing listens on this port now
    monkeypatch.setenv("PRECOND_DATA_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(D.DatasetUnavailable, match="could not download") as ei:
        D.fetch("good", progress=False, timeout=5)
    assert f"127.0.0.1:{port}/good" in str(ei.value) and "PRECOND_DATA_DIR" in str(ei.value)
    assert _leftovers(env) == []


def test_unknown_checksum_needs_trust_or_user_checksum(env, monkeypatch, capsys):
    with pytest.raises(D.ChecksumError) as ei:
        D.fetch("nosha", progress=False)
    assert ei.value.actual == SHA and SHA in str(ei.value) and "PRECOND_SHA256_NOSHA" in str(ei.value)
    assert SHA in capsys.readouterr().err                       # the checksum it got is printed
    assert _leftovers(env) == []
    monkeypatch.setenv("PRECOND_SHA256_NOSHA", "0" * 64)       # a wrong user checksum is a mismatch
    with pytest.raises(D.ChecksumError, match="mismatch"):
        D.fetch("nosha", progress=False)
    monkeypatch.setenv("PRECOND_SHA256_NOSHA", SHA)
    assert D.fetch("nosha", progress=False).read_bytes() == TEXT
    monkeypatch.delenv("PRECOND_SHA256_NOSHA")
    A, _ = D.load("nosha")                                     # the verification record is remembered
    assert A.shape == (50, 3)


def test_trust_unverified_then_changed_file_is_refused(env):
    path = D.fetch("nosha", progress=False, trust_unverified=True)
    assert D.load("nosha")[0].shape == (50, 3)
    path.write_bytes(TEXT.replace(b"3:0.5", b"3:0.7"))
    with pytest.raises(D.ChecksumError, match="changed since it was verified"):
        D.load("nosha")


def test_bz2_is_verified_then_decompressed(env):
    path = D.fetch("zipped", progress=False)
    assert path.name == "good" and path.read_bytes() == TEXT
    assert _leftovers(env) == ["good", "good.verified"]        # the archive itself is not kept
    assert D.load("zipped")[0].shape == (50, 3)


def test_corrupt_archive_leaves_nothing(env):
    with pytest.raises(D.DatasetError, match="cannot decompress"):
        D.fetch("badzip", progress=False, trust_unverified=True)
    assert _leftovers(env) == []


def test_user_placed_archive_is_verified(env):
    raw = env / "raw"
    raw.mkdir(parents=True)
    (raw / "good.bz2").write_bytes(BZ)
    A, _ = D.load("zipped")
    assert A.shape == (50, 3) and (raw / "good").read_bytes() == TEXT


def test_load_downloads_only_when_asked(env, monkeypatch):
    with pytest.raises(D.DatasetUnavailable, match=r"fetch\('good'\)"):
        D.load("good")
    assert _leftovers(env) == []
    monkeypatch.setenv("PRECOND_DOWNLOAD", "1")
    assert D.load("good")[0].shape == (50, 3)


def test_fetch_replaces_a_corrupted_local_copy(env):
    raw = env / "raw"
    raw.mkdir(parents=True)
    (raw / "good").write_bytes(b"1 1:1\n")
    with pytest.raises(D.ChecksumError):
        D.load("good")
    assert D.fetch("good", progress=False).read_bytes() == TEXT
    assert D.load("good")[0].shape == (50, 3)


def test_mirror_url_override(env, server, monkeypatch):
    monkeypatch.setenv("PRECOND_DATA_URL", server)
    assert D.fetch("good", progress=False).read_bytes() == TEXT
    assert D.fetch("good", url=f"{server}/good", force=True, progress=False).read_bytes() == TEXT
