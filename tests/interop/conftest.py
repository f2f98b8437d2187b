"""Fixtures for the interoperability tests: an empty weights cache, torchvision-format files
with a catalog row that names them, and a real HTTP server on 127.0.0.1."""

import dataclasses
import functools
import http.server
import sys
import threading
from pathlib import Path

import pytest
import torch

import cnnlab
from cnnlab.models import weights as W

sys.path.insert(0, str(Path(__file__).parent))  # interop_helpers.py


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """Empty cnnlab and torch hub caches, official base URL: no earlier download leaks in."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cnnlab-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("CNNLAB_WEIGHTS_URL", raising=False)
    return tmp_path / "cnnlab-cache" / "weights"


@pytest.fixture
def catalog_row(monkeypatch):
    """`pin(name, digest)`: make the catalog's default row for `name` expect `digest` (the test's
    own file stands in for torchvision's, which cannot be fetched here)."""

    def pin(name: str, digest: str) -> W.PretrainedWeights:
        row = W.find_weights(name)
        new = dataclasses.replace(row, sha256=digest)
        monkeypatch.setattr(W, "CATALOG", tuple(new if r is row else r for r in W.CATALOG))
        return new

    return pin


@pytest.fixture
def seeded_model():
    """`build(name)`: a registered model with seeded random weights (no download)."""

    def build(name: str, **kw) -> torch.nn.Module:
        torch.manual_seed(123)
        return cnnlab.create_model(name, **kw).eval()

    return build


class _Server:
    def __init__(self, root: Path):
        self.root, self.requests = root, []
        handler = functools.partial(self._Handler, self, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    class _Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, server_state, *args, **kwargs):
            self.state = server_state
            super().__init__(*args, **kwargs)

        def do_GET(self):
            self.state.requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep test output clean
            pass


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 (a free port) serving the folder `server.root`."""
    server = _Server(tmp_path / "served")
    server.root.mkdir()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
