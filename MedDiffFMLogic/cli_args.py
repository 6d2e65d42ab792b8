"""Argument helpers shared by every command: the common options, --threads, and "X,Y,Z" numbers.
Torch-free: the options are declared in settings/common.py."""

from __future__ import annotations

import argparse

from .settings.common import DEVICE, FORCE, PROGRESS, SEED, THREADS


def add_common(parser: argparse.ArgumentParser) -> None:
    """--device and --seed (unless the command's config declared them already), --progress, --force."""
    taken = {a.dest for a in parser._actions}
    for name, setting in (("device", DEVICE), ("seed", SEED), ("progress", PROGRESS), ("force", FORCE)):
        if name not in taken:
            setting.add_to(parser, name)


def add_threads(parser: argparse.ArgumentParser) -> None:
    """--threads: torch's CPU threads for the network (set by cli.main before the command runs)."""
    if "threads" not in {a.dest for a in parser._actions}:
        THREADS.add_to(parser, "threads")


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
