"""PNG of one scored file: its log-mel spectrogram and each model's surprisal curve (bits per frame),
plus the difference of the first two models' curves when two are given (matplotlib, no display)."""

from __future__ import annotations

from typing import IO

import numpy as np

LN2 = float(np.log(2.0))


LABEL_SIZE = 9  # points: every axis label, the difference panel's included


def plot_title(name: str, scores: list[tuple[str, float]]) -> str:
    """``name: model 1.23 bits/frame, other 1.45 bits/frame``: the same unit as the curves."""
    return f"{name}: " + ", ".join(f"{model} {bits:.3f} bits/frame" for model, bits in scores)


def plot_scores(f: IO[bytes], mel: np.ndarray, curves: list[tuple[str, np.ndarray]], frame_rate: float,
                title: str) -> None:
    """``mel [T, 80]`` raw log-mel; ``curves``: (label, surprisal ``[T, K]`` in nats) per model."""
    import matplotlib.pyplot as plt

    fig = score_figure(mel, curves, frame_rate, title)
    fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


def score_figure(mel: np.ndarray, curves: list[tuple[str, np.ndarray]], frame_rate: float, title: str):
    """The matplotlib figure ``plot_scores`` saves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 2 + (len(curves) >= 2)
    fig, axes = plt.subplots(rows, 1, figsize=(10, 2.4 * rows), sharex=True, squeeze=False)
    axes = axes[:, 0]
    T = mel.shape[0]
    t = np.arange(T) / frame_rate
    extent = (0.0, T / frame_rate, 0, mel.shape[1])
    axes[0].imshow(mel.T, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=max(-10.0, float(mel.max()) - 8))
    axes[0].set_ylabel("mel bin", fontsize=LABEL_SIZE)
    axes[0].set_title(title, fontsize=9)
    bits = [(label, s.sum(axis=1) / LN2) for label, s in curves]
    for label, b in bits:
        axes[1].plot(t, b, lw=0.8, label=f"{label} (mean {b.mean():.2f})")
    axes[1].set_ylabel("surprisal (bits/frame)", fontsize=LABEL_SIZE)
    axes[1].legend(fontsize=7, loc="upper right")
    if rows == 3:
        (la, a), (lb, b) = bits[0], bits[1]
        axes[2].plot(t, a - b, lw=0.8, color="k", label=f"{la} - {lb}")
        axes[2].axhline(0.0, lw=0.5, color="grey")
        axes[2].set_ylabel("difference (bits/frame)", fontsize=LABEL_SIZE)
        axes[2].legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("time (s)", fontsize=LABEL_SIZE)
    fig.tight_layout()
    return fig
