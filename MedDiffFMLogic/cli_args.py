"""Argument helpers shared by every command: the common options, --threads, and "X,Y,Z" numbers.
Torch-free: the options are declared in settings/common.py."""

from __future__ import annotations

import argparse

from .settings.common import DEVICE, FORCE, PROGRESS, SEED, THREADS


class Parser(argparse.ArgumentParser):
    """argparse without prefix matching of long options (--step must not silently mean --steps), and
    with a suggestion for a misspelt option."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def command_parsers(self) -> dict[str, argparse.ArgumentParser]:
        """The parsers of the commands (empty when this one has none)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        command = getattr(parsed, "command", None)
        chosen = self.command_parsers().get(command) if command else None
        if extras and chosen is not None and chosen is not self:
            # The command's parser knows its options: let it name the unknown ones and suggest.
            chosen.error(unknown_options_message(extras, chosen))
        return parsed, extras

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(unknown_options_message(extras, self))
        return parsed


def unknown_options_message(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """"unrecognized arguments: ..." and, for each misspelt option, the nearest one the command has."""
    import difflib

    known = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    hints = []
    for extra in extras:
        if extra.startswith("--"):
            close = difflib.get_close_matches(extra.split("=", 1)[0], known, n=1, cutoff=0.6)
            if close:
                hints.append(f"{extra.split('=', 1)[0]}: did you mean {close[0]}?")
    return "unrecognized arguments: " + " ".join(extras) + "".join(f"\n  {h}" for h in hints)


def add_common(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """--device and --seed (unless the command's config declared them already), --progress, --force;
    `only`: just these of them (a command on which the others would do nothing)."""
    taken = {a.dest for a in parser._actions}
    for name, setting in (("device", DEVICE), ("seed", SEED), ("progress", PROGRESS), ("force", FORCE)):
        if name not in taken and (only is None or name in only):
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
