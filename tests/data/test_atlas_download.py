"""The ATLAS downloader against a loopback HTTP server serving archives in the real layout."""

import functools
import http.server
import threading
import zipfile
from pathlib import Path

import pytest

from starmd.data.atlas import StarmdDownloadError, download_entry
from starmd.data.sources import discover
from starmd.errors import StarmdInputError
from tests.conftest import ASSETS

MD = ASSETS / "demo" / "1am7"


_ROOTS: dict[str, Path] = {}


def server_root(url: str) -> Path:
    return _ROOTS[url]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    entry = root / "1am7_A"
    entry.mkdir()
    with zipfile.ZipFile(entry / "1am7_A_protein.zip", "w") as zf:
        zf.write(MD / "1am7.pdb", "1am7_A.pdb")
        zf.write(MD / "1am7_prod_R1_fit.xtc", "1am7_A_prod_R1_fit.xtc")
        zf.writestr("README.txt", "ATLAS entry")
    broken = root / "2bad_A"
    broken.mkdir()
    (broken / "2bad_A_protein.zip").write_bytes(b"not a zip")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    _ROOTS[url] = root
    yield url
    httpd.shutdown()


def test_download_unpacks_the_atlas_layout_that_prepare_reads(server, tmp_path):
    seen = []
    folder = download_entry(
        "1am7_A", tmp_path, base_url=server, progress=lambda d, t: seen.append(d)
    )
    assert (folder / "1am7_A.pdb").exists() and (folder / "1am7_A_prod_R1_fit.xtc").exists()
    assert seen[-1] == (Path(server_root(server)) / "1am7_A" / "1am7_A_protein.zip").stat().st_size
    sources = discover(folder)
    assert [(s.name, s.replica) for s in sources] == [("1am7_A", 1)]
    # an entry already present is not fetched again: an unreachable server is never contacted
    assert download_entry("1am7_A", tmp_path, base_url="http://127.0.0.1:9") == folder


def test_download_errors_leave_nothing_behind(server, tmp_path):
    with pytest.raises(StarmdDownloadError, match="HTTP 404"):
        download_entry("9zzz_A", tmp_path, base_url=server)
    with pytest.raises(StarmdDownloadError, match="not a valid zip"):
        download_entry("2bad_A", tmp_path, base_url=server)
    with pytest.raises(StarmdInputError, match="not an ATLAS entry name"):
        download_entry("../etc", tmp_path, base_url=server)
    assert list(tmp_path.iterdir()) == []
