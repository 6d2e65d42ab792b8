"""Device choice: `auto` picks CUDA only if it is built and works, then MPS, then the CPU."""

from __future__ import annotations

import torch

from .errors import MedDiffFMError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _cuda_works() -> bool:
    if not (torch.backends.cuda.is_built() and torch.cuda.is_available()):
        return False
    try:  # a driver that reports a GPU but cannot run a kernel is "not working"
        torch.zeros(1, device="cuda").add_(1)
        return True
    except RuntimeError:
        return False


def _mps_works() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def _cuda() -> torch.device:
    # Every sliding window has the same shape, so cuDNN's search for the fastest convolution pays for
    # itself after the first step. (A deterministic training run turns it off again.)
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda")


def resolve_device(choice: str = "auto") -> torch.device:
    """The torch device for a user's choice; CUDA_VISIBLE_DEVICES is honoured because torch honours it."""
    if choice == "auto":
        if _cuda_works():
            return _cuda()
        if _mps_works():
            return torch.device("mps")
        return torch.device("cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda":
        if not _cuda_works():
            raise MedDiffFMError(
                "--device cuda was asked for, but no working CUDA GPU is visible to torch "
                f"(torch {torch.__version__}, CUDA built: {torch.backends.cuda.is_built()}); "
                "use --device auto or cpu, or install a CUDA build of torch"
            )
        return _cuda()
    if choice == "mps":
        if not _mps_works():
            raise MedDiffFMError("--device mps was asked for, but MPS is not available; use --device auto or cpu")
        return torch.device("mps")
    raise MedDiffFMError(f"unknown device {choice!r}; choose one of {', '.join(DEVICE_CHOICES)}")


# ----------------------------------------------------------------------------------------- CPU precision


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX). Without either, oneDNN emulates
    bf16 and a training step under bf16 autocast is many times slower than in fp32 (measured on an
    AVX2-only EPYC: over two minutes against 4.4 s)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(p is not None for p in probes):
        return any(bool(p()) for p in probes)
    try:  # older torch without the probes: the kernel's CPU flags (Linux)
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_speedup_cpu(size: int = 16, channels: int = 16, seconds: float = 0.5) -> float:
    """fp32 time over bf16-autocast time for a small 3D convolution forward and backward on the CPU:
    above 1 when bf16 pays here. A short probe (about `seconds` per precision, after one warm-up)."""
    import time

    conv = torch.nn.Conv3d(channels, channels, 3, padding=1)
    x = torch.randn(2, channels, size, size, size)

    def rate(dtype: torch.dtype | None) -> float:
        def once():
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                conv(x).float().square().mean().backward()

        once()  # warm-up: oneDNN builds its kernels on the first call
        start, n = time.perf_counter(), 0
        while n < 2 or time.perf_counter() - start < seconds:
            once()
            n += 1
        return n / (time.perf_counter() - start)

    return rate(torch.bfloat16) / rate(None)


def training_precision(device: torch.device, requested: str) -> tuple[torch.dtype | None, str]:
    """The autocast dtype for training (None: fp32) and why. `requested`: "auto" (bf16 on a CUDA GPU that
    supports it, and on a CPU that computes bf16 in hardware and runs it faster than fp32; fp32 elsewhere),
    "no" (fp32), "bf16" or "fp16" (CUDA; on a CPU fp16 is refused and bf16 falls back to fp32 when the
    CPU would only emulate it)."""
    if requested == "no":
        return None, "fp32 (asked for)"
    if device.type == "cuda":
        if requested == "fp16":
            return torch.float16, "fp16 autocast (asked for)"
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "bf16 autocast" + (" (asked for)" if requested == "bf16" else " (the GPU supports it)")
        return None, "fp32: this GPU has no bf16"
    if device.type != "cpu":
        return None, f"fp32 on {device.type}"
    if requested == "fp16":
        return None, "fp32: fp16 training is for CUDA GPUs"
    if not cpu_bf16_native():
        return None, "fp32: this CPU has neither AVX512-BF16 nor AMX, so bf16 would be emulated (slow)"
    speedup = bf16_speedup_cpu()
    if speedup < 1.1:
        return None, f"fp32: bf16 measured {speedup:.2f}x fp32's speed on this CPU"
    return torch.bfloat16, f"bf16 autocast: {speedup:.2f}x fp32's speed on this CPU (AVX512-BF16/AMX)"
