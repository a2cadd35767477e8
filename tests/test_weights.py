"""EnCodec weight resolution: downloads from a local HTTP server (127.0.0.1, never the internet),
atomic writes, hash-prefix checks, the torch hub cache, explicit paths and offline errors."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from audiotok import weights
from audiotok.errors import WeightsError
from audiotok.weights import download, resolve_encodec

NAME = "encodec_24khz-d7cc33bc.th"


@pytest.fixture(scope="module")
def payload() -> bytes:
    """A small random checkpoint (a plain state dict, as the official files are), ~4 MB so a
    download takes several 1 MiB reads."""
    gen = torch.Generator().manual_seed(0)
    buf = io.BytesIO()
    torch.save({"w": torch.randn(1024, 1024, generator=gen), "b": torch.randn(7, generator=gen)}, buf)
    return buf.getvalue()


class Server:
    """``http.server`` in a thread on 127.0.0.1:0. ``routes`` maps a URL path to
    ``(mode, data)``: ``"ok"`` serves data, ``"cut"`` announces all of it but closes the
    connection halfway, ``"slow"`` pauses halfway and runs ``on_pause``. Other paths: 404."""

    def __init__(self):
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.requests: list[str] = []
        self.on_pause = None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                if self.path not in server.routes:
                    self.send_error(404)
                    return
                mode, data = server.routes[self.path]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                half = len(data) // 2
                self.wfile.write(data[:half])
                self.wfile.flush()
                if mode == "cut":
                    self.close_connection = True
                    return
                if mode == "slow" and server.on_pause is not None:
                    time.sleep(0.3)  # let the client write what it has read so far
                    server.on_pause()
                self.wfile.write(data[half:])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    for var in ("AUDIOTOK_OFFLINE", "HF_HUB_OFFLINE", "AUDIOTOK_ENCODEC_URL"):
        monkeypatch.delenv(var, raising=False)
    return home


def _files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_downloads_into_hub_cache_atomically_then_reuses_it(server, torch_home, payload, monkeypatch):
    # The official name's hash prefix (d7cc33bc) cannot be forged for a random file, so the
    # hash check is accepted here and tested on its own below.
    monkeypatch.setattr(weights, "_sha256_prefix_ok", lambda path, name: True)
    ckpt_dir = torch_home / "hub" / "checkpoints"
    server.routes["/v0/" + NAME] = ("slow", payload)
    seen = []
    server.on_pause = lambda: seen.append(_files(ckpt_dir))
    monkeypatch.setenv("AUDIOTOK_ENCODEC_URL", server.url + "/v0")  # no trailing slash: added

    path = resolve_encodec("encodec_24khz")

    assert path == ckpt_dir / NAME
    assert path.read_bytes() == payload
    assert _files(ckpt_dir) == [NAME]
    assert server.requests == ["/v0/" + NAME]
    # halfway through, only a temp file is there: the final name appears complete or not at all
    assert len(seen) == 1 and len(seen[0]) == 1
    assert seen[0][0].startswith("." + NAME + ".tmp-") and seen[0][0] != NAME  # sinks.atomic_write's temp name
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(state) == {"w", "b"}

    # second time: the cache, no server (and offline is fine too)
    server.close()
    assert resolve_encodec("encodec_24khz") == path
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    assert resolve_encodec("encodec_24khz") == path
    assert server.requests == ["/v0/" + NAME]


def test_official_name_rejects_a_file_with_another_hash(server, torch_home, payload, monkeypatch):
    server.routes["/" + NAME] = ("ok", payload)
    monkeypatch.setenv("AUDIOTOK_ENCODEC_URL", server.url)
    with pytest.raises(WeightsError) as info:
        resolve_encodec("encodec_24khz")
    assert str(info.value) == (
        f"downloaded {server.url}/{NAME} but its sha256 does not match the hash in its name; "
        "the download is corrupt or the mirror serves another file"
    )
    assert _files(torch_home / "hub" / "checkpoints") == []


def test_download_checks_the_hash_prefix_in_the_name(server, tmp_path, payload):
    digest = hashlib.sha256(payload).hexdigest()
    server.routes["/file.th"] = ("ok", payload)
    url = server.url + "/file.th"

    dest = tmp_path / "good" / f"x-{digest[:8]}.th"
    assert download(url, dest, check_name=dest.name) == dest
    assert dest.read_bytes() == payload and _files(dest.parent) == [dest.name]

    wrong = ("0" if digest[0] != "0" else "1") + digest[1:8]
    bad = tmp_path / "bad" / f"x-{wrong}.th"
    with pytest.raises(WeightsError) as info:
        download(url, bad, check_name=bad.name)
    assert str(info.value) == (
        f"downloaded {url} but its sha256 does not match the hash in its name; "
        "the download is corrupt or the mirror serves another file"
    )
    assert _files(bad.parent) == []


def test_connection_closed_mid_file_leaves_nothing(server, torch_home, payload, monkeypatch):
    server.routes["/" + NAME] = ("cut", payload)
    monkeypatch.setenv("AUDIOTOK_ENCODEC_URL", server.url)
    dest = torch_home / "hub" / "checkpoints" / NAME
    with pytest.raises(WeightsError) as info:
        resolve_encodec("encodec_24khz")
    half = len(payload) // 2
    assert str(info.value) == (
        f"could not download {server.url}/{NAME} (the connection closed after {half} of "
        f"{len(payload)} bytes); put the file at {dest} or pass --checkpoint PATH"
    )
    assert _files(dest.parent) == []

    # without a hash in the name only the announced length can tell: still no file
    plain = torch_home / "plain" / "weights.th"
    with pytest.raises(WeightsError, match=rf"\(the connection closed after {half} of {len(payload)} bytes\)"):
        download(f"{server.url}/{NAME}", plain)
    assert _files(plain.parent) == []


def test_404_leaves_nothing(server, torch_home, monkeypatch):
    monkeypatch.setenv("AUDIOTOK_ENCODEC_URL", server.url)
    dest = torch_home / "hub" / "checkpoints" / NAME
    with pytest.raises(WeightsError) as info:
        resolve_encodec("encodec_24khz")
    assert str(info.value) == (
        f"could not download {server.url}/{NAME} (HTTP Error 404: Not Found); "
        f"put the file at {dest} or pass --checkpoint PATH"
    )
    assert _files(dest.parent) == []


def test_no_server_is_a_weights_error(torch_home, monkeypatch):
    s = Server()
    url = s.url
    s.close()  # the port is now closed: connection refused
    monkeypatch.setenv("AUDIOTOK_ENCODEC_URL", url)
    dest = torch_home / "hub" / "checkpoints" / NAME
    with pytest.raises(WeightsError) as info:
        resolve_encodec("encodec_24khz")
    msg = str(info.value)
    assert msg.startswith(f"could not download {url}/{NAME} (")
    assert msg.endswith(f"); put the file at {dest} or pass --checkpoint PATH")
    assert _files(dest.parent) == []


@pytest.mark.parametrize("mirror", ["127.0.0.1:9/encodec", "mirror/encodec"])  # no scheme
def test_bad_mirror_url_is_a_weights_error(torch_home, monkeypatch, mirror):
    monkeypatch.setenv("AUDIOTOK_ENCODEC_URL", mirror)
    with pytest.raises(WeightsError) as info:
        resolve_encodec("encodec_24khz")
    assert str(info.value).startswith(f"could not download {mirror}/{NAME} (")
    assert _files(torch_home / "hub" / "checkpoints") == []


def test_explicit_checkpoint_wins(server, torch_home, tmp_path, payload, monkeypatch):
    mine = tmp_path / "my weights.th"
    mine.write_bytes(payload)
    monkeypatch.setenv("AUDIOTOK_ENCODEC_URL", server.url)
    assert resolve_encodec("encodec_24khz", checkpoint=mine) == mine
    assert resolve_encodec("encodec_24khz", checkpoint=str(mine)) == mine
    # ... over a filled cache too
    cached = torch_home / "hub" / "checkpoints" / NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cached")
    assert resolve_encodec("encodec_24khz", checkpoint=mine) == mine
    assert server.requests == []


def test_missing_explicit_checkpoint(torch_home, tmp_path):
    missing = tmp_path / "nope.th"
    with pytest.raises(WeightsError) as info:
        resolve_encodec("encodec_24khz", checkpoint=missing)
    assert str(info.value) == f"checkpoint file {missing} does not exist; check the --checkpoint path"


@pytest.mark.parametrize("var", ["AUDIOTOK_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_without_cache_names_file_and_folder(server, torch_home, monkeypatch, var):
    monkeypatch.setenv(var, "1")
    monkeypatch.setenv("AUDIOTOK_ENCODEC_URL", server.url)
    with pytest.raises(WeightsError) as info:
        resolve_encodec("encodec_lm_24khz")
    folder = torch_home / "hub" / "checkpoints"
    assert str(info.value) == (
        "encodec_lm_24khz-1608e3c0.th is not in the torch hub cache and downloads are off; "
        f"put it at {folder / 'encodec_lm_24khz-1608e3c0.th'} or pass --checkpoint PATH"
    )
    assert server.requests == [] and _files(folder) == []


def test_unknown_model_name(torch_home):
    with pytest.raises(WeightsError) as info:
        resolve_encodec("encodec_96khz")
    assert str(info.value) == (
        "unknown EnCodec model 'encodec_96khz'; choose one of "
        "encodec_24khz, encodec_48khz, dac_16khz, dac_24khz, dac_44khz, encodec_lm_24khz, encodec_lm_48khz"
    )
