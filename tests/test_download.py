"""`gnnsparse download`: real HTTP on 127.0.0.1 against a local server serving ../shared/data,
with Range support, dropped connections, a Range-ignoring server, checksum mismatch and offline."""

import contextlib
import hashlib
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gnnsparse.cli import main
from gnnsparse.data.download import DownloadError, download_dataset, fetch

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("GNNSPARSE_DATA") or REPO.parent / "shared" / "data")
REL = "snap/sx-mathoverflow.txt.gz"
SRC = DATA / REL

pytestmark = pytest.mark.skipif(not SRC.is_file(), reason=f"{SRC} not found")


def _sums():
    out = {}
    for line in (DATA / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split(None, 1)
            out[name.strip()] = digest
    return out


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):  # quiet
        pass

    def do_GET(self):
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append(rng)
        path = (DATA / self.path.lstrip("/")).resolve()
        if not path.is_file() or DATA.resolve() not in path.parents:
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        m = re.match(r"bytes=(\d+)-$", rng or "")
        if m and srv.mode != "ignore_range":
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        drop = srv.mode == "always_drop" or (srv.drop_first and len(srv.requests) == 1)
        if drop:
            self.wfile.write(body[: max(1, len(body) // 3)])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client may have gone already
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, mode="normal", drop_first=False):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode, self.drop_first, self.requests = mode, drop_first, []

    def url(self, rel=REL):
        return f"http://127.0.0.1:{self.server_address[1]}/{rel}"


@pytest.fixture
def serve():
    servers = []

    def start(mode="normal", drop_first=False):
        s = _Server(mode, drop_first)
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _resumed(requests):
    return [r for r in requests if r and int(re.match(r"bytes=(\d+)-$", r).group(1)) > 0]


def test_source_checksum_matches_sha256sums():
    assert _sha(SRC) == _sums()[REL]


def test_dropped_connection_resumes_with_range(serve, tmp_path):
    srv = serve(drop_first=True)
    dest = fetch(srv.url(), tmp_path / "x.txt.gz", retry_wait=0, progress=False)
    assert dest == tmp_path / "x.txt.gz"
    assert _sha(dest) == _sums()[REL] == _sha(SRC)
    assert len(srv.requests) == 2 and srv.requests[0] is None
    assert _resumed(srv.requests), srv.requests
    assert not list(tmp_path.glob("*.part"))


def test_interrupted_leaves_only_part_then_resumes(serve, tmp_path):
    dying = serve(mode="always_drop")
    dest = tmp_path / "x.txt.gz"
    with pytest.raises(DownloadError, match=r"interrupted.*run again to resume"):
        fetch(dying.url(), dest, retries=2, retry_wait=0, progress=False)
    assert len(dying.requests) == 3 and len(_resumed(dying.requests)) == 2
    part = tmp_path / "x.txt.gz.part"
    assert not dest.exists() and part.is_file()
    have = part.stat().st_size
    assert 0 < have < SRC.stat().st_size
    good = serve()
    fetch(good.url(), dest, retry_wait=0, progress=False)
    assert good.requests == [f"bytes={have}-"]
    assert _sha(dest) == _sha(SRC) and not part.exists()


def test_server_ignoring_range_still_correct(serve, tmp_path):
    srv = serve(mode="ignore_range", drop_first=True)
    dest = fetch(srv.url(), tmp_path / "x.txt.gz", retry_wait=0, progress=False)
    assert _resumed(srv.requests)  # the client asked for a range, got 200, restarted from 0
    assert _sha(dest) == _sha(SRC)
    assert not list(tmp_path.glob("*.part"))


def test_complete_part_416_is_accepted(serve, tmp_path):
    srv = serve()
    part = tmp_path / "x.txt.gz.part"
    part.write_bytes(SRC.read_bytes())
    dest = fetch(srv.url(), tmp_path / "x.txt.gz", retry_wait=0, progress=False)
    assert srv.requests == [f"bytes={SRC.stat().st_size}-"]
    assert _sha(dest) == _sha(SRC) and not part.exists()


def test_sha256_mismatch_raises_and_writes_no_final_file(serve, tmp_path):
    srv = serve()
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download_dataset("stackoverflow", url=srv.url(), cache_dir=tmp_path, expected_sha256="0" * 64,
                         progress=False, retry_wait=0)
    assert list(tmp_path.iterdir()) == []


def test_known_checksum_verified_and_root_link(serve, tmp_path):
    srv = serve()
    root = tmp_path / "root"
    root.mkdir()
    res = download_dataset("stackoverflow", url=srv.url(), cache_dir=tmp_path / "cache", root=root,
                           expected_sha256=_sums()[REL], expected_size=SRC.stat().st_size, progress=False)
    assert res.verified and res.sha256 == _sums()[REL] and res.size == SRC.stat().st_size
    # saved and linked under the original's name, whatever the URL's file is called
    assert res.linked == root / "snap" / "sx-stackoverflow.txt.gz" and _sha(res.linked) == _sums()[REL]
    from gnnsparse.reproduce import find_datasets
    assert [(d.name, d.source) for d in find_datasets(root, ["stackoverflow"])[0]] == [("stackoverflow", "original")]
    again = download_dataset("stackoverflow", url=srv.url(), cache_dir=tmp_path / "cache", progress=False)
    assert again.cached and len(srv.requests) == 1


def test_offline_url_clear_error(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{REL}"
    with pytest.raises(DownloadError, match=re.escape(url)):
        fetch(url, tmp_path / "x", retries=1, retry_wait=0, progress=False)
    code = main(["download", "stackoverflow", "--url", url, "--cache-dir", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and f"gnnsparse: error: cannot reach {url}" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_brain_needs_url(tmp_path, capsys):
    code = main(["download", "brain", "--cache-dir", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "no stable public URL" in err and "--url" in err


def test_unwritable_root_clear_error(serve, tmp_path):
    srv = serve()
    root = tmp_path / "root"
    root.mkdir()
    (root / "snap").write_text("a file where the snap/ folder should be")
    with pytest.raises(DownloadError, match="cannot write into --root"):
        download_dataset("stackoverflow", url=srv.url(), cache_dir=tmp_path / "c", root=root, progress=False)
    with pytest.raises(DownloadError, match="not an existing directory"):
        download_dataset("stackoverflow", url=srv.url(), cache_dir=tmp_path / "c", root=tmp_path / "nope",
                         progress=False)
    assert _sha(tmp_path / "c" / "sx-stackoverflow.txt.gz") == _sha(SRC)  # the cached download is kept
    if os.geteuid() != 0:  # root ignores directory permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(DownloadError, match="not writable|cannot write"):
                download_dataset("stackoverflow", url=srv.url(), cache_dir=tmp_path / "c", root=ro,
                                 progress=False)
        finally:
            ro.chmod(0o755)


def test_cli_module_entry(serve, tmp_path):
    srv = serve()
    r = subprocess.run([sys.executable, "-m", "gnnsparse", "download", "stackoverflow", "--url", srv.url(),
                        "--cache-dir", str(tmp_path), "--no-progress"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert str(tmp_path / "sx-stackoverflow.txt.gz") in r.stdout
    assert "unverified" in r.stdout and _sums()[REL] in r.stdout
