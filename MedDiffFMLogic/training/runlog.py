"""A run's records beside its checkpoints: the loss logs read back, the loss curve and sample slices as
PNGs, and the library versions a model card names."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..figures import pyplot, save_figure


def monai_version() -> str:
    import monai

    return monai.__version__


def read_csv(path: Path) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    rows = list(csv.reader(path.read_text().splitlines()))[1:]
    return [(int(r[0]), float(r[1])) for r in rows if r]


def plot_losses(path: Path, losses: list[tuple[int, float]], vals: list[tuple[int, float]], title: str) -> Path:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.6))
    if losses:
        steps, values = np.array([s for s, _ in losses]), np.array([v for _, v in losses])
        ax.plot(steps, values, color="0.75", lw=0.6, label="training loss")
        k = max(1, min(50, len(values) // 10))
        if k > 1:
            smooth = np.convolve(values, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1 :], smooth, color="C0", lw=1.5, label=f"training, mean of {k}")
    if vals:
        ax.plot([s for s, _ in vals], [v for _, v in vals], "o-", color="C3", ms=3, label="validation (EMA)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("L1 noise loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def save_slices(path: Path, rows: list[tuple[str, np.ndarray]], title: str) -> Path:
    plt = pyplot()

    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.5 * len(rows)), squeeze=False)
    for r, (name, vol) in enumerate(rows):
        d, h, w = vol.shape
        for c, (view, img) in enumerate((("axial", vol[d // 2]), ("coronal", vol[:, h // 2]), ("sagittal", vol[:, :, w // 2]))):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=-1, vmax=1, origin="lower" if c else "upper")
            ax.set_title(f"{name}, {view}", fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)
