"""PNG figures (demo montage, loss curves, training samples): matplotlib without a display, and files
written atomically like every other output (temporary file, then rename)."""

from __future__ import annotations

import os
from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend: the engine runs headless, in a subprocess of Slicer too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int) -> Path:
    """Write `fig` to `path` (folders created) through a temporary file, and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        pyplot().close(fig)
        if tmp.exists():
            tmp.unlink()
    return path
