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
