"""The sliding window's settings (sampling.SlidingWindowEstimator): memory and speed knobs."""

from __future__ import annotations

from dataclasses import dataclass

from . import Setting

# The network's arithmetic, by name (sampling.PRECISIONS maps each to a torch dtype).
PRECISION_NAMES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class WindowConfig:
    """How the volume is tiled: window edge (None: the model's training window), overlap fraction,
    windows evaluated per network call (None: `auto_window_batch`), the Gaussian blending width
    relative to the window, and the precision of the network's arithmetic: "fp32" (default), "bf16"
    (autocast; about 2x faster on CPUs with AMX or AVX512-BF16, about 1% relative error in eps), or
    "fp16" (CUDA only). Blending and the sampler's update stay in float32 whatever the precision."""

    size: int | None = Setting(None, "window edge in voxels (default: the model's)", type=int, minimum=1, flag="--window").field()
    overlap: float = Setting(0.25, "window overlap fraction (default %(default)s)", type=float, minimum=0, below=1).field()
    batch: int | None = Setting(
        None, "windows per network call (default: as many as keep the estimated network peak under 1 GiB, at most 4)",
        type=int, minimum=1, flag="--window-batch",
    ).field()
    sigma_scale: float = Setting(0.125, "Gaussian blending width relative to the window", cli=False).field()
    precision: str = Setting(
        "fp32", "network arithmetic: fp32 (default), bf16 (about 2x faster on recent CPUs, ~1%% error), fp16 (CUDA)",
        choices=PRECISION_NAMES,
    ).field()

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError("overlap must lie in [0, 1)")
        if self.batch is not None and self.batch < 1:
            raise ValueError("windows per batch must be at least 1")
        if self.size is not None and self.size < 1:
            raise ValueError("window size must be positive")
        if self.precision not in PRECISION_NAMES:
            raise ValueError(f"precision must be one of {', '.join(PRECISION_NAMES)}")
