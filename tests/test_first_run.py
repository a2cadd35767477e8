"""What a new user meets first: missing EnCodecMAE weights offline, the README quick start from any
working directory, plot units and labels, and plurals in messages."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from audiotok.errors import WeightsError

from .conftest import REPO


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _hub_scripts() -> set[str]:
    return {ep.name for ep in metadata.distribution("huggingface_hub").entry_points if ep.group == "console_scripts"}


def test_missing_mae_weights_without_network_fail_at_once_with_a_working_hint(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    from audiotok.weights import resolve_encodecmae

    port = _closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    for var in ("HF_HUB_OFFLINE", "AUDIOTOK_OFFLINE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
                "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    asked = []
    real = huggingface_hub.hf_hub_download

    def spy(**kw):
        asked.append(kw.get("local_files_only", False))
        return real(**kw, cache_dir=str(tmp_path / "empty_cache"))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    with pytest.raises(WeightsError) as info:
        resolve_encodecmae("mel256-ec-small")
    assert asked == [True]  # only the cache was asked: no download was tried, so no retries
    msg = str(info.value)
    assert msg.startswith("mel256-ec-small.pt of the Hugging Face repo lpepino/encodecmae-v2 is not in the cache")
    assert f"127.0.0.1:{port} cannot be reached (no network?)" in msg
    assert msg.endswith("or pass a local checkpoint file with --model PATH (load_embedder(PATH) in Python)")
    command = re.search(r"`([^`]+)`", msg).group(1)
    assert command.endswith(" download lpepino/encodecmae-v2 mel256-ec-small.pt")
    assert command.split()[0] in _hub_scripts()  # a command the installed huggingface_hub has


def test_the_suggested_download_command_exists_in_this_environment():
    from audiotok.weights import hf_download_command

    command = hf_download_command("lpepino/encodecmae-v2", "x.pt").split()
    exe = Path(sys.executable).parent / command[0]
    assert exe.is_file(), f"{exe} is not installed"
    p = subprocess.run([str(exe), command[1], "--help"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0 and "download" in (p.stdout + p.stderr).lower(), p.stderr[-500:]


def test_readme_quick_start_clone_folder_does_not_shadow_the_package(tmp_path):
    readme = (REPO / "README.md").read_text()
    clone = re.search(r"git clone <this repository> (\S+) && cd (\S+) && pip install", readme)
    assert clone and clone.group(1) == clone.group(2)
    folder = clone.group(1)
    assert folder != "audiotok"
    # from the folder the clone sits in, `import audiotok` is the package, not the clone
    (tmp_path / folder).symlink_to(REPO, target_is_directory=True)
    p = subprocess.run([sys.executable, "-c", "import audiotok; print(audiotok.load_embedder.__module__)"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "audiotok.embedders.chunking", p.stderr[-1000:]


def test_plot_title_and_curves_share_the_unit_and_the_difference_label_is_readable():
    import matplotlib.pyplot as plt

    from audiotok.lm.plots import LABEL_SIZE, plot_title, score_figure

    title = plot_title("clip.wav", [("whisper-gpt", 12.3456), ("token-gpt", 13.0)])
    assert title == "clip.wav: whisper-gpt 12.346 bits/frame, token-gpt 13.000 bits/frame"
    rng = np.random.default_rng(0)
    curves = [("a (tiny)", rng.random((50, 2))), ("b (tiny)", rng.random((50, 2)))]
    fig = score_figure(rng.random((50, 80)), curves, 75.0, title)
    try:
        top, mid, diff = fig.axes
        assert top.get_title() == title and "nats" not in top.get_title()
        assert mid.get_ylabel() == "surprisal (bits/frame)" and diff.get_ylabel() == "difference (bits/frame)"
        assert diff.yaxis.label.get_fontsize() == LABEL_SIZE >= 9
        assert [t.get_text() for t in diff.get_legend().get_texts()] == ["a (tiny) - b (tiny)"]
        np.testing.assert_allclose(diff.lines[0].get_ydata(),
                                   (curves[0][1].sum(1) - curves[1][1].sum(1)) / np.log(2.0), rtol=1e-6)
    finally:
        plt.close(fig)


def test_plurals():
    from audiotok.engine.progress import plural

    assert [plural(n, "validation file") for n in (0, 1, 2)] == ["0 validation files", "1 validation file",
                                                                  "2 validation files"]
    assert plural(1, "input") == "1 input" and plural(3, "child", "children") == "3 children"
