"""Argument helpers shared by every command: the common options and the sliding-window options."""

from __future__ import annotations

import argparse

from .device import DEVICE_CHOICES
from .errors import InputError
from .progress import PROGRESS_MODES
from .sampling import WindowConfig


def add_common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("common options")
    group.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to run (default: auto)")
    group.add_argument("--seed", type=int, default=0, help="random seed; the same seed repeats the output")
    group.add_argument(
        "--progress", choices=PROGRESS_MODES, default=None,
        help="progress report: a bar (default on a terminal), JSON lines on stdout, or none",
    )
    group.add_argument(
        "--force", action="store_true",
        help="run on an input whose values are implausible for a CT in HU (e.g. an MR), with a warning",
    )


def add_windows(parser: argparse.ArgumentParser, skip_air: bool = False) -> None:
    """The sliding-window options; skip_air=True adds --skip-air (commands whose input shows the body)."""
    group = parser.add_argument_group("sliding window (memory and speed)")
    group.add_argument("--window", type=int, default=None, help="window edge in voxels (default: the model's)")
    group.add_argument("--overlap", type=float, default=0.25, help="window overlap fraction (default 0.25)")
    group.add_argument(
        "--window-batch", type=int, default=None,
        help="windows per network call (default: as many as keep the estimated network peak under 1 GiB, at most 4)",
    )
    group.add_argument(
        "--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
        help="network arithmetic: fp32 (default), bf16 (about 2x faster on recent CPUs, ~1%% error), fp16 (CUDA)",
    )
    group.add_argument(
        "--threads", type=int, default=None,
        help="CPU threads for the network (default: torch's, one per core); fewer leaves cores to other work",
    )
    if skip_air:
        group.add_argument(
            "--skip-air", action="store_true",
            help="do not run the network on windows wholly outside the body (found by thresholding the input "
                 "at -500 HU); the clean image there is taken to be air (-1000 HU). Faster when air surrounds "
                 "the body; changes the result slightly in the air only (default off)",
        )


def window_config(args: argparse.Namespace) -> WindowConfig:
    try:
        return WindowConfig(
            size=args.window, overlap=args.overlap, batch=args.window_batch, precision=args.precision,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def triple(kind):
    """An argparse type for "X,Y,Z" (or "XxYxZ", or one number for all three)."""

    def parse(text: str):
        try:
            values = tuple(kind(p) for p in text.replace("x", ",").split(",") if p.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected three numbers, got {text!r}") from None
        if len(values) == 1:
            values = values * 3
        if len(values) != 3:
            raise argparse.ArgumentTypeError(f"expected one or three numbers, got {text!r}")
        return values

    return parse
