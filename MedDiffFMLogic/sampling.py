"""The one sampling core every task uses.

At each step the whole volume's noise estimate is assembled from overlapping windows, each window
carrying its own crops of the position coordinates, the anatomy labels and any control volume; the
estimates are blended with Gaussian weights; then one update runs on the whole volume.

Memory: besides the volume x_t itself the estimator keeps two volume-sized buffers (the blended
estimate and the reciprocal weight sum); per-window work is bounded by the window size and batch.

Skipping windows (`Conditions.active`): a window containing no active voxel is not evaluated. Voxels
that some evaluated window covers get the Gaussian blend of the evaluated windows only; voxels that
no evaluated window covers get the noise estimate of a constant clean image,
    eps = (x_t - sqrt(a_t) v) / sqrt(1 - a_t),   v = Conditions.inactive_value,
which makes the sampler's x0 estimate there exactly v (air, for the tasks' --skip-air). The
reciprocal weight sum is 0 on those voxels, which marks them without another volume-sized buffer.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F

from .errors import InputError, ResourceError
from .network import coordinate_grid, whole_volume_axes
from .progress import SILENT, Progress
from .settings.windows import WindowConfig  # noqa: F401 (declared with the other settings; imported from here too)


# Network arithmetic per precision name (None: float32, no autocast).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Conditions:
    """What the denoiser is told about the volume being sampled.

    region: region class index (None: unknown). anatomy: (D, H, W) integer labels on the volume's grid.
    axes: per-axis coordinates (z, y, x) of the volume in its whole-volume frame; None means the volume
    is the whole volume ([-1, 1] along each axis). use_position=False feeds no position at all.
    control: (C, D, H, W) volume for a ControlNet (low-resolution image, lesion mask), cropped per window.
    active: bool (D, H, W) on the volume's grid, or None (every window runs): windows containing no
    active voxel are not evaluated, and voxels no evaluated window covers get the noise estimate of the
    constant clean image `inactive_value` (in the region's [-1, 1] units; see the module's docstring).
    """

    region: int | None = None
    anatomy: torch.Tensor | None = None
    axes: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    use_position: bool = True
    control: torch.Tensor | None = None
    active: torch.Tensor | None = None
    inactive_value: float = -1.0


class Denoiser(Protocol):
    """eps_theta: MedDiffFMNet, or a network with a ControlNet that accepts control=."""

    config: object

    def __call__(self, x, timesteps, region=None, anatomy=None, coords=None, **kwargs) -> torch.Tensor: ...


# Peak memory of one window's network call, as a multiple of its first-level activation
# (channels[0] x window^3 floats): measured 17x for the small and paper presets and 24x for the tiny
# one at 32^3-64^3 in inference mode on a CPU (input channels, im2col and skip buffers included).
ACTIVATION_FACTOR = 24
# Windows per call when not given: as many as keep the estimated network peak under this, up to 4.
AUTO_BATCH_BYTES = 2**30
AUTO_BATCH_MAX = 4
# Volume-sized float32 arrays the sampler holds at its peak (x_t, blended eps, reciprocal weights,
# x0_hat, x_s, fresh noise), and a margin for the task's own copies (input, measurement, result).
SAMPLER_VOLUMES = 6
TASK_VOLUMES = 4


def window_peak_bytes(first_channels: int, window: Sequence[int], itemsize: int = 4) -> int:
    """Estimated peak memory of one window in one network call."""
    return ACTIVATION_FACTOR * first_channels * math.prod(window) * itemsize


def auto_window_batch(first_channels: int, window: Sequence[int], itemsize: int = 4) -> int:
    """Windows per network call when not given: as many as keep the estimated peak under
    AUTO_BATCH_BYTES, up to AUTO_BATCH_MAX. Batching matters on a CPU beyond amortising calls: for a
    batch of one, narrow levels fall to PyTorch's slow conv3d path instead of oneDNN (measured 4x per
    window for the tiny preset at 32^3). The paper's model at 128^3 gets one."""
    per_window = window_peak_bytes(first_channels, window, itemsize)
    return int(max(1, min(AUTO_BATCH_MAX, AUTO_BATCH_BYTES // max(per_window, 1))))


def estimate_peak_bytes(shape: Sequence[int], first_channels: int, window: Sequence[int], batch: int,
                        itemsize: int = 4) -> int:
    """Estimated peak memory of a sampling run over a volume of `shape` (the task's arrays included)."""
    volume = math.prod(shape) * 4
    return (SAMPLER_VOLUMES + TASK_VOLUMES) * volume + batch * window_peak_bytes(first_channels, window, itemsize)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for this run on `device` (None: cannot tell, e.g. MPS or a non-Linux host)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start indices of windows covering [0, length); the last window ends exactly at the border."""
    if length <= window:
        return [0]
    stride = max(1, int(window * (1.0 - overlap)))
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


def gaussian_window(size: Sequence[int], sigma_scale: float, device, dtype) -> torch.Tensor:
    """Separable Gaussian importance map peaking at the window centre, floored so no weight is zero."""
    weights = None
    for n in size:
        centre = (n - 1) / 2.0
        sigma = max(sigma_scale * n, 1e-3)
        g = torch.exp(-0.5 * ((torch.arange(n, dtype=torch.float64) - centre) / sigma) ** 2)
        weights = g if weights is None else weights[..., None] * g
    weights = weights / weights.max()
    return weights.clamp_min(1e-4).to(device=device, dtype=dtype)


class SlidingWindowEstimator:
    """Whole-volume noise estimate from overlapping windows with Gaussian blending."""

    def __init__(
        self,
        denoiser: Denoiser,
        shape: Sequence[int],
        conditions: Conditions = Conditions(),
        windows: WindowConfig = WindowConfig(),
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        *,
        alphas_cumprod: torch.Tensor | None = None,
    ):
        """alphas_cumprod (the schedule's alpha_bar_t) is needed only with `conditions.active`: the
        estimate on voxels that no evaluated window covers depends on the timestep through it."""
        self.denoiser = denoiser
        self.shape = tuple(int(s) for s in shape)
        self.conditions = conditions
        self.windows = windows
        self.device = torch.device(device)
        self.dtype = dtype
        cfg = denoiser.config
        divisor = cfg.size_divisor
        edge = windows.size or cfg.default_window
        if edge % divisor:
            raise InputError(f"window size {edge} must be a multiple of {divisor} for this model; pass --window {max(divisor, edge // divisor * divisor)}")
        # Along an axis shorter than the window, the window shrinks to the axis rounded up to the
        # network's divisor; the few missing voxels are padded per window.
        self.window = tuple(min(edge, math.ceil(n / divisor) * divisor) for n in self.shape)
        starts = [window_starts(n, w, windows.overlap) for n, w in zip(self.shape, self.window)]
        self.boxes = [
            tuple(slice(s, min(s + w, n)) for s, w, n in zip(corner, self.window, self.shape))
            for corner in itertools.product(*starts)
        ]
        self.autocast = PRECISIONS[windows.precision]
        if self.autocast is torch.float16 and self.device.type != "cuda":
            raise InputError("fp16 runs on CUDA only; use --precision bf16 on a CPU")
        self.batch = windows.batch or auto_window_batch(cfg.channels[0], self.window, torch.finfo(dtype).bits // 8)
        self._check_memory(cfg.channels[0], torch.finfo(dtype).bits // 8)
        self.weight = gaussian_window(self.window, windows.sigma_scale, self.device, dtype)
        if conditions.axes is None:
            self.axes = whole_volume_axes(self.shape, self.device)
        else:
            self.axes = tuple(a.to(self.device, dtype=torch.float32) for a in conditions.axes)
            if tuple(len(a) for a in self.axes) != self.shape:
                raise ValueError("coordinate axes must match the volume's shape")
        self.active_boxes = self._active_boxes(conditions.active, alphas_cumprod)
        self.alphas_cumprod = None if alphas_cumprod is None else alphas_cumprod.detach().to("cpu", torch.float64)
        self._sum = torch.zeros((1, 1, *self.shape), device=self.device, dtype=dtype)
        self._norm = torch.zeros((1, 1, *self.shape), device=self.device, dtype=dtype)
        for box in self.active_boxes:
            self._norm[(..., *box)] += self._valid_weight(box)
        self._norm.reciprocal_()
        # Tiles (a non-overlapping tiling by the window size) holding voxels that no evaluated window
        # covers: there the estimate is filled in analytically, tile by tile, so that the temporaries
        # stay window-sized. Those voxels' weight sum is 0: their reciprocal becomes the marker 0.
        self._fill_tiles = []
        if len(self.active_boxes) < len(self.boxes):
            self._norm.masked_fill_(torch.isinf(self._norm), 0.0)
            self._fill_tiles = [
                tile for tile in _tiling(self.shape, self.window) if not self._norm[(0, 0, *tile)].all()
            ]

    def __len__(self) -> int:
        """All windows tiling the volume (see `active_windows` for those the network evaluates)."""
        return len(self.boxes)

    @property
    def active_windows(self) -> int:
        """Windows the network evaluates at every step."""
        return len(self.active_boxes)

    def _active_boxes(self, active: torch.Tensor | None, alphas_cumprod: torch.Tensor | None) -> list:
        if active is None:
            return list(self.boxes)
        if alphas_cumprod is None:
            raise ValueError("skipping windows (Conditions.active) needs the schedule: pass alphas_cumprod=")
        if tuple(active.shape) != self.shape or active.dtype != torch.bool:
            raise ValueError(f"Conditions.active must be a bool tensor of the volume's shape {self.shape}")
        return [box for box in self.boxes if bool(active[box].any())]

    def _check_memory(self, first_channels: int, itemsize: int) -> None:
        """Refuse before the run, with the knob to turn, when the estimate exceeds the free memory."""
        free = available_memory(self.device)
        if free is None:
            return
        need = estimate_peak_bytes(self.shape, first_channels, self.window, self.batch, itemsize)
        if need <= free:
            return
        volume = (SAMPLER_VOLUMES + TASK_VOLUMES) * math.prod(self.shape) * 4
        if self.batch > 1 and volume + window_peak_bytes(first_channels, self.window, itemsize) <= free:
            advice = "lower --window-batch (1 fits)"
        elif volume < free:
            advice = "lower --window-batch to 1 and --window (e.g. half the model's window)"
        else:
            advice = "crop the volume or use a model with a coarser working spacing"
        where = "GPU" if self.device.type == "cuda" else "memory"
        raise ResourceError(
            f"this run needs about {_gib(need)} of {where} and {_gib(free)} is free "
            f"(volume {'x'.join(map(str, self.shape))}, windows {'x'.join(map(str, self.window))}, "
            f"{self.batch} per call); {advice}" + ("; or run on the CPU with --device cpu" if where == "GPU" else "")
        )

    def _valid_weight(self, box) -> torch.Tensor:
        return self.weight[tuple(slice(0, b.stop - b.start) for b in box)]

    def _pad(self, crop: torch.Tensor) -> torch.Tensor:
        """Pad a (C, d, h, w) crop up to the window size (replicating the border)."""
        missing = [w - n for w, n in zip(self.window, crop.shape[-3:])]
        if not any(missing):
            return crop
        pad = [p for m in reversed(missing) for p in (0, m)]
        return F.pad(crop.unsqueeze(0).float(), pad, mode="replicate").squeeze(0).to(crop.dtype)

    def _window_axes(self, box) -> list[torch.Tensor]:
        """Coordinates of a window, extended linearly past the volume where the window is padded."""
        out = []
        for axis, b, w in zip(self.axes, box, self.window):
            a = axis[b]
            if len(a) < w:
                step = (a[-1] - a[0]) / (len(a) - 1) if len(a) > 1 else a.new_tensor(0.0)
                extra = a[-1] + step * torch.arange(1, w - len(a) + 1, device=a.device)
                a = torch.cat([a, extra])
            out.append(a)
        return out

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """eps estimate for x of shape (1, 1, D, H, W) at timestep t. The returned tensor is an
        internal buffer, valid until the next call."""
        cond = self.conditions
        self._sum.zero_()
        for group in _chunks(self.active_boxes, self.batch):
            xs = torch.stack([self._pad(x[0][(slice(None), *box)]) for box in group])
            kwargs = {}
            if cond.use_position:
                kwargs["coords"] = torch.cat([coordinate_grid(self._window_axes(box)) for box in group])
            if cond.anatomy is not None:
                kwargs["anatomy"] = torch.stack(
                    [self._pad(cond.anatomy[None][(slice(None), *box)])[0] for box in group]
                ).to(self.device)
            if cond.control is not None:
                kwargs["control"] = torch.stack(
                    [self._pad(cond.control[(slice(None), *box)]) for box in group]
                ).to(self.device, self.dtype)
            timesteps = torch.full((len(group),), int(t), device=self.device, dtype=torch.long)
            eps = self._evaluate(xs.to(self.device, self.dtype), timesteps, cond.region, kwargs).to(self.dtype)
            for e, box in zip(eps, group):
                valid = e[(slice(None), *(slice(0, b.stop - b.start) for b in box))]
                self._sum[(0, slice(None), *box)] += valid * self._valid_weight(box)
        eps = self._sum.mul_(self._norm)
        if self._fill_tiles:
            a_t = float(self.alphas_cumprod[int(t)])
            shift = math.sqrt(a_t) * float(cond.inactive_value)
            scale = 1.0 / math.sqrt(1.0 - a_t)
            for tile in self._fill_tiles:
                e = eps[(0, 0, *tile)]
                uncovered = self._norm[(0, 0, *tile)] == 0
                analytic = (x[(0, 0, *tile)].to(self.device, self.dtype) - shift) * scale
                e.copy_(torch.where(uncovered, analytic, e))
        return eps


    def _evaluate(self, xs, timesteps, region, kwargs) -> torch.Tensor:
        """One network call; on running out of GPU memory, retry in halves and keep the smaller batch."""
        try:
            with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                return self.denoiser(xs, timesteps, region=region, **kwargs)
        except torch.OutOfMemoryError:
            if len(xs) == 1:
                raise ResourceError(
                    f"out of {self.device.type.upper()} memory with one {'x'.join(map(str, self.window))} window "
                    "per call; lower --window, use --precision bf16, or run with --device cpu"
                ) from None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = (len(xs) + 1) // 2
            warnings.warn(f"out of memory with {len(xs)} windows per call; going on with {half}", stacklevel=2)
            self.batch = min(self.batch, half)
            parts = []
            for start in range(0, len(xs), half):
                part = {k: v[start : start + half] for k, v in kwargs.items()}  # every kwarg is per window
                parts.append(self._evaluate(xs[start : start + half], timesteps[start : start + half], region, part))
            return torch.cat(parts)


def _tiling(shape: Sequence[int], tile: Sequence[int]) -> list[tuple[slice, ...]]:
    """Non-overlapping boxes of (at most) `tile` voxels covering a volume of `shape`."""
    ranges = [[slice(s, min(s + t, n)) for s in range(0, n, t)] for n, t in zip(shape, tile)]
    return list(itertools.product(*ranges))


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(int(seed))
    return generator


def spaced_timesteps(steps: int, start: int = 999) -> list[int]:
    """`steps` timesteps spaced uniformly from `start` down to 0 (descending, without repeats)."""
    if steps < 1:
        raise ValueError("the number of sampling steps must be at least 1")
    if start < 0:
        raise ValueError("the starting timestep must be >= 0")
    values = torch.linspace(start, 0, min(steps, start + 1), dtype=torch.float64).round().long().tolist()
    return list(dict.fromkeys(values))


@dataclass
class StepContext:
    """What a hook sees at one step: index in the timestep list, t and the next timestep t_next
    (-1 = the end, alpha_bar = 1), the current sample x_t, the network's noise estimate (valid until
    the next step) and the x_0 estimate after clipping and x0_hook."""

    index: int
    t: int
    t_next: int
    x_t: torch.Tensor
    eps: torch.Tensor | None
    x0: torch.Tensor | None


def sample(
    estimator: Callable[[torch.Tensor, int], torch.Tensor],
    alphas_cumprod: torch.Tensor,
    x: torch.Tensor,
    timesteps: Sequence[int],
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    clip: bool = True,
    x0_hook: Callable[[torch.Tensor, StepContext], torch.Tensor] | None = None,
    on_step: Callable[[torch.Tensor, StepContext], torch.Tensor | None] | None = None,
    progress: Progress = SILENT,
    stage: str = "sampling",
) -> torch.Tensor:
    """Generalised DDIM sampling (Song et al., 2021, eq. 12) over an arbitrary timestep sequence.

    For consecutive timesteps t > s (s = -1 after the last one, with alpha_bar_{-1} = 1):
        x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t),  clipped to [-1, 1], then x0_hook(x0_hat)
        eps'   = (x_t - sqrt(a_t) x0_hat) / sqrt(1 - a_t)
        sigma  = eta sqrt((1 - a_s) / (1 - a_t)) sqrt(1 - a_t / a_s)
        x_s    = sqrt(a_s) x0_hat + sqrt(1 - a_s - sigma^2) eps' + sigma z
    eta = 0 is deterministic DDIM, eta = 1 is DDPM-like ancestral sampling. A step to a *later*
    timestep s > t re-noises instead, x_s ~ q(x_s | x_t) (RePaint's jumps back in time).
    x starts at timesteps[0] (an intermediate timestep starts a partial trajectory); on_step(x_s, ctx)
    may return a replacement for x_s (data consistency, RePaint's known region).
    """
    a = alphas_cumprod.to(torch.float64)
    steps = list(timesteps)
    progress.start(stage, len(steps))
    with torch.inference_mode():
        for i, t in enumerate(steps):
            s = steps[i + 1] if i + 1 < len(steps) else -1
            a_t = a[t].item()
            a_s = a[s].item() if s >= 0 else 1.0
            if s > t:
                z = _noise_like(x, generator)
                x = math.sqrt(a_s / a_t) * x + math.sqrt(1.0 - a_s / a_t) * z
                ctx = StepContext(i, t, s, x, None, None)
            else:
                # A step holds x_t, x0_hat and x_s besides the estimator's two buffers.
                eps = estimator(x, t)
                x0 = torch.add(x, eps, alpha=-math.sqrt(1.0 - a_t)).div_(math.sqrt(a_t))
                if clip:
                    x0.clamp_(-1.0, 1.0)
                ctx = StepContext(i, t, s, x, eps, x0)
                if x0_hook is not None:
                    x0 = x0_hook(x0, ctx)
                    ctx.x0 = x0
                sigma = eta * math.sqrt((1.0 - a_s) / (1.0 - a_t)) * math.sqrt(max(1.0 - a_t / a_s, 0.0))
                # x_s = sqrt(a_s) x0 + c eps' with eps' = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t), fused so
                # that eps' never occupies a volume of its own.
                c = math.sqrt(max(1.0 - a_s - sigma**2, 0.0)) / math.sqrt(1.0 - a_t)
                x = torch.mul(x, c).add_(x0, alpha=math.sqrt(a_s) - c * math.sqrt(a_t))
                if sigma > 0:
                    x.add_(_noise_like(x, generator), alpha=sigma)
            if on_step is not None:
                replaced = on_step(x, ctx)
                if replaced is not None:
                    x = replaced
            progress.step(i + 1, f"t={t}")
    return x


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def add_noise(x0: torch.Tensor, t: int, alphas_cumprod: torch.Tensor, generator: torch.Generator | None = None):
    """x_t ~ q(x_t | x_0) = sqrt(a_t) x_0 + sqrt(1 - a_t) z, for starting a partial trajectory."""
    a_t = alphas_cumprod[t].item()
    return math.sqrt(a_t) * x0 + math.sqrt(1.0 - a_t) * _noise_like(x0, generator)
