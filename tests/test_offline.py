"""No view touches the network unless `--download` (issue 23 item 3): with empty model caches, `extract
--views timm` and a `clip` view of an `hf-hub:` model fail with one line (exit 2), and a guard on this
process's sockets sees no look-up of and no connection to any host but this one."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from conftest import run_cli_in_process

from vidcache.synth import write_video

LOCAL = {"localhost", "127.0.0.1", "::1", "", None}


@pytest.fixture
def network_guard(monkeypatch, tmp_path):
    """Empty Hugging Face / torch hub caches, and every non-loopback look-up or connect recorded and refused."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # as a fresh process has it
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    attempts: list[str] = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOCAL:
            attempts.append(f"getaddrinfo {host}")
            raise socket.gaierror(socket.EAI_NONAME, "network refused by the test")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else None
        if host not in LOCAL:
            attempts.append(f"connect {address}")
            raise OSError("network refused by the test")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("offline")
    write_video(root / "a.mp4", 4, fps=4)
    (root / "m.csv").write_text("path\na.mp4\n")
    return root / "m.csv"


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--views", "timm"], "timm weights for vit_small_patch14_dinov2.lvd142m are not in the local Hugging Face"),
        (["--views", "clip", "--clip-model", "hf-hub:vidcache-test/no-such-clip"], "not in the local Hugging Face"),
    ],
)
def test_missing_weights_fail_at_once_without_touching_the_network(network_guard, manifest, tmp_path, flags, says):
    import open_clip  # noqa: F401  (imported before the clock starts: on a loaded machine imports take seconds)
    import timm  # noqa: F401

    import vidcache.extract.views.clip.model  # noqa: F401

    started = time.perf_counter()
    code, out, err = run_cli_in_process("extract", manifest, "--cache", tmp_path / "c", *flags, "--json")
    seconds = time.perf_counter() - started
    assert network_guard == [], network_guard
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "--download" in lines[0], err
    assert str(tmp_path / "hf" / "hub") in lines[0]  # the cache it looked in, as the environment names it
    assert json.loads(out)["exit_code"] == 2
    assert seconds < 10, seconds  # ~0.1 s; before: 12 retries of huggingface.co, 55 s (a loose bound)
