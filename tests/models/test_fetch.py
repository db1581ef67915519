"""`lakd weights fetch`: a small file served from 127.0.0.1 (no other network): sha256 checks, atomic write,
resume with HTTP Range after a dropped connection, restart when the server ignores Range or the file changed."""
import hashlib
import http.server
import threading

import pytest

from lakd.cli import main
from lakd.models import catalogue
from lakd.models.catalogue import Entry
from lakd.models.fetch import FetchError, fetch_entry, fetch_url

PAYLOAD = bytes(range(256)) * 800  # 204,800 bytes


class _Server:
    """A HTTP server on 127.0.0.1 with switchable behaviour: Range support, a drop after N bytes."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.ranges = True
        self.drop_after = None  # close the connection after this many body bytes (once)
        self.etag = '"v1"'
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.requests.append(dict(self.headers))
                if self.path != "/w.pth":
                    self.send_error(404)
                    return
                data, start = outer.payload, 0
                rng = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                if rng and outer.ranges and (if_range is None or if_range == outer.etag):
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", outer.etag)
                self.end_headers()
                if outer.drop_after is not None:
                    n, outer.drop_after = outer.drop_after, None
                    self.wfile.write(body[:n])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/w.pth"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server(PAYLOAD)
    yield s
    s.close()


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_fresh_download_is_verified_and_atomic(server, tmp_path):
    dest = tmp_path / "w" / "w.pth"
    r = fetch_url(server.url, dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD and r.sha256 == SHA and r.downloaded and r.resumed_from == 0
    assert sorted(p.name for p in dest.parent.iterdir()) == ["w.pth"]  # no .part / sidecar left
    again = fetch_url(server.url, dest, sha256=SHA, progress=False)
    assert not again.downloaded and len(server.requests) == 1  # verified on disk, nothing fetched


def test_interrupted_download_resumes_with_range(server, tmp_path):
    dest = tmp_path / "w.pth"
    server.drop_after = 70_000
    with pytest.raises(FetchError, match="resume"):
        fetch_url(server.url, dest, sha256=SHA, progress=False)
    assert not dest.exists() and (tmp_path / "w.pth.part").stat().st_size == 70_000
    r = fetch_url(server.url, dest, sha256=SHA, progress=False)
    assert r.resumed_from == 70_000 and dest.read_bytes() == PAYLOAD
    assert server.requests[-1]["Range"] == "bytes=70000-" and server.requests[-1]["If-Range"] == '"v1"'
    assert not (tmp_path / "w.pth.part").exists() and not (tmp_path / "w.pth.part.json").exists()


def test_server_without_range_support_restarts_cleanly(server, tmp_path):
    dest = tmp_path / "w.pth"
    server.drop_after = 50_000
    with pytest.raises(FetchError):
        fetch_url(server.url, dest, sha256=SHA, progress=False)
    server.ranges = False
    r = fetch_url(server.url, dest, sha256=SHA, progress=False)
    assert r.resumed_from == 0 and dest.read_bytes() == PAYLOAD


def test_file_changed_on_the_server_restarts(server, tmp_path):
    """If-Range: a new ETag means the server sends the whole (new) file, which replaces the stale part."""
    dest = tmp_path / "w.pth"
    server.drop_after = 50_000
    with pytest.raises(FetchError):
        fetch_url(server.url, dest, progress=False)
    server.payload, server.etag = PAYLOAD[::-1], '"v2"'
    r = fetch_url(server.url, dest, progress=False)
    assert r.resumed_from == 0 and dest.read_bytes() == PAYLOAD[::-1]


def test_complete_part_file_is_finished_on_416(server, tmp_path):
    dest = tmp_path / "w.pth"
    (tmp_path / "w.pth.part").write_bytes(PAYLOAD)
    (tmp_path / "w.pth.part.json").write_text(f'{{"url": "{server.url}", "validator": "\\"v1\\""}}')
    r = fetch_url(server.url, dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD and r.resumed_from == len(PAYLOAD)


def test_checksum_mismatch_removes_the_download(server, tmp_path):
    dest = tmp_path / "w.pth"
    with pytest.raises(FetchError, match="does not match"):
        fetch_url(server.url, dest, sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FetchError, match="does not start with"):
        fetch_url(server.url, dest, sha256_prefix="deadbeef", progress=False)
    fetch_url(server.url, dest, sha256_prefix=SHA[:8], progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_http_errors_are_one_line(server, tmp_path):
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_url(server.url.replace("w.pth", "missing.pth"), tmp_path / "x", progress=False)
    with pytest.raises(FetchError, match="only http"):
        fetch_url("ftp://127.0.0.1/x", tmp_path / "x", progress=False)
    assert list(tmp_path.iterdir()) == []


def _entry(url, **kw):
    return Entry(name="tiny", backbone="resnet18", layout="cirkd", url=url, file="tiny.pth", **kw)


def test_unknown_checksum_is_recorded_then_enforced(server, tmp_path):
    e = _entry(server.url)
    r = fetch_entry(e, tmp_path, progress=False)
    assert (tmp_path / "tiny.pth.sha256").read_text().split()[0] == SHA == r.sha256
    (tmp_path / "tiny.pth").unlink()
    server.payload = PAYLOAD[::-1]  # the publisher swapped the file: the record catches it
    with pytest.raises(FetchError, match="does not match"):
        fetch_entry(e, tmp_path, progress=False)


def test_cli_fetch_and_list(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(catalogue, "load_catalogue", lambda path=None: {"tiny": _entry(server.url)})
    monkeypatch.setenv("LAKD_WEIGHTS_DIR", str(tmp_path / "env"))
    assert main(["weights", "fetch", "tiny", "--to", str(tmp_path / "w"), "--no-progress"]) == 0
    assert (tmp_path / "w" / "tiny.pth").read_bytes() == PAYLOAD
    assert "downloaded" in capsys.readouterr().out
    assert main(["weights", "fetch", "tiny", "--no-progress"]) == 0  # the env var's folder
    assert (tmp_path / "env" / "tiny.pth").is_file()
    assert main(["weights", "list", "--to", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "yes" in out
    assert main(["weights", "fetch", "tiny", "nope"]) == 2  # every name is checked before anything is fetched
    assert "no weights named 'nope'" in capsys.readouterr().err and len(server.requests) == 2


def test_packaged_catalogue_is_consistent():
    from lakd.models.registry import BACKBONES

    cat = catalogue.load_catalogue()
    assert {"resnet18-deepstem-cirkd", "resnet101-deepstem-cirkd", "resnet18-v1c-mmseg", "resnet18-torchvision",
            "mobilenetv2-torchvision", "stdc1-mmseg", "stdc2-mmseg", "hrnetv2-w18-mmseg"} <= set(cat)
    for e in cat.values():
        assert e.backbone in BACKBONES and e.url.startswith(("http://", "https://"))
        assert e.layout in ("cirkd", "mmseg", "torchvision")
        if e.sha256_prefix:  # torchvision / OpenMMLab file names carry the sha256 prefix
            assert e.sha256_prefix in e.file
        if e.layout == "torchvision" and e.backbone.startswith("resnet"):
            assert e.options == {"deep_stem": False}


def test_stale_part_longer_than_the_file_restarts(server, tmp_path):
    dest = tmp_path / "w.pth"
    (tmp_path / "w.pth.part").write_bytes(PAYLOAD + b"extra")
    (tmp_path / "w.pth.part.json").write_text(f'{{"url": "{server.url}", "validator": "\\"v1\\""}}')
    r = fetch_url(server.url, dest, progress=False)  # no checksum known: the 416 must not be taken as complete
    assert dest.read_bytes() == PAYLOAD and r.resumed_from == 0


def test_a_second_fetch_of_the_same_file_is_refused(server, tmp_path):
    import fcntl

    dest = tmp_path / "w.pth"
    with open(tmp_path / "w.pth.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(FetchError, match="another fetch of this file is running"):
            fetch_url(server.url, dest, progress=False)
    (tmp_path / "w.pth.lock").unlink()
    fetch_url(server.url, dest, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]
