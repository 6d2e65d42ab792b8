"""Every setting of every task, declared once: its default, its type and its help text.

A task's config is a frozen dataclass (settings/<task>.py) whose fields carry their declaration
(`Setting.field()`); the command line is built from those declarations (cli.py, `Command.add_to`), and
the Slicer module can read the same ones. This package never imports torch, MONAI or SimpleITK, so
`meddifffm --help` and the Slicer module (which must never import torch) can import it.

Help texts may say "%(default)s": argparse writes the declared default there.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import InputError

_SAME = object()  # the command line's default is the config's


@dataclass(frozen=True)
class Setting:
    """One setting: default and help, and how the command line spells it."""

    default: Any
    help: str
    type: Callable | None = None
    choices: tuple | None = None
    flag: str | None = None  # default: --<field name with dashes>
    action: str | None = None  # "store_true" or "store_false"
    group: str | None = None  # title of the --help section it is listed under
    exclusive: str | None = None  # settings with the same name here exclude each other on the command line
    cli: bool = True  # False: the API's only
    # Bounds of a number (each of a triple's three), checked for every command before work starts
    # (check_numbers): at least `minimum`, above `above` (strictly), at most `maximum`, below `below`.
    minimum: float | None = None
    above: float | None = None
    maximum: float | None = None
    below: float | None = None

    def field(self, **changes: Any) -> dataclasses.Field:
        """A dataclass field with this setting's default, carrying the declaration."""
        s = dataclasses.replace(self, **changes) if changes else self
        return dataclasses.field(default=s.default, metadata={"setting": s})

    def flag_for(self, name: str) -> str:
        return self.flag or "--" + name.replace("_", "-")

    def dest_for(self, name: str) -> str:
        return self.flag_for(name).lstrip("-").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser, name: str) -> None:
        target = _group(parser, self.group)
        if self.exclusive:
            target = _exclusive(parser, target, self.exclusive)
        kwargs: dict[str, Any] = {"help": self.help}
        if self.action:
            kwargs["action"] = self.action
            if self.action == "store_false":
                kwargs["dest"] = self.dest_for(name)  # argparse would call it no_...; keep it readable
        else:
            kwargs.update(default=self.default, type=self.type)
            if self.choices:
                kwargs["choices"] = self.choices
        target.add_argument(self.flag_for(name), **kwargs)
        parser.__dict__.setdefault("_meddifffm_settings", []).append((self.dest_for(name), name, self))

    def problem(self, name: str, value: Any) -> str | None:
        """What is wrong with `value` for this setting's bounds, or None (None values are the "not
        given" of optional settings). Infinite and NaN values are out of every bound."""
        limits = [(b, word, ok) for b, word, ok in (
            (self.minimum, "at least", lambda v, b: v >= b), (self.above, "above", lambda v, b: v > b),
            (self.maximum, "at most", lambda v, b: v <= b), (self.below, "below", lambda v, b: v < b),
        ) if b is not None]
        if value is None or isinstance(value, bool) or not limits:
            return None
        values = value if isinstance(value, (tuple, list)) else (value,)
        if all(isinstance(v, (int, float)) and math.isfinite(v) and all(ok(v, b) for b, _, ok in limits)
               for v in values):
            return None
        shown = ",".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in values)
        return f"{self.flag_for(name)} must be {' and '.join(f'{word} {b:g}' for b, word, _ in limits)}, got {shown}"


def check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every number a command was given, within its declared bounds (Setting.minimum ...): one check
    for every command, run before any work (cli.main). Raises InputError naming the option."""
    for dest, name, setting in parser.__dict__.get("_meddifffm_settings", []):
        problem = setting.problem(name, getattr(args, dest, None))
        if problem:
            raise InputError(problem)


def check_config(config: Any) -> None:
    """The same bounds for a config made in code (the API, the demo, the Slicer module)."""
    for f in dataclasses.fields(config):
        if "nested" in f.metadata:
            check_config(getattr(config, f.name))
        elif "setting" in f.metadata:
            problem = f.metadata["setting"].problem(f.name, getattr(config, f.name))
            if problem:
                raise InputError(problem)


def nested(factory: Callable, group: str) -> dataclasses.Field:
    """A config field that is itself a config of settings (the sliding window's), listed under `group`."""
    return dataclasses.field(default_factory=factory, metadata={"nested": group})


def declared(config: type) -> list[tuple[str, Setting]]:
    """(field name, Setting) of a config's settings the command line offers, nested ones included."""
    out = []
    for f in dataclasses.fields(config):
        if "nested" in f.metadata:
            out += declared(f.default_factory)
        elif "setting" in f.metadata and f.metadata["setting"].cli:
            out.append((f.name, f.metadata["setting"]))
    return out


def add_settings(parser: argparse.ArgumentParser, config: type) -> None:
    for f in dataclasses.fields(config):
        if "nested" in f.metadata:
            nested_config = f.default_factory
            for name, s in declared(nested_config):
                dataclasses.replace(s, group=s.group or f.metadata["nested"]).add_to(parser, name)
        elif "setting" in f.metadata and f.metadata["setting"].cli:
            f.metadata["setting"].add_to(parser, f.name)


def config_from_args(config: type, args: argparse.Namespace, **given: Any):
    """The config of the parsed command line (fields it does not offer keep their defaults; `given`
    overrides); a value the config refuses is a usage error (InputError)."""
    values = dict(given)
    for f in dataclasses.fields(config):
        if f.name in values:
            continue
        if "nested" in f.metadata:
            values[f.name] = config_from_args(f.default_factory, args)
        elif "setting" in f.metadata and f.metadata["setting"].cli:
            values[f.name] = getattr(args, f.metadata["setting"].dest_for(f.name))
    try:
        made = config(**values)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    check_config(made)
    return made


@dataclass(frozen=True)
class File:
    """A file a command reads or writes: a positional argument or an option (not a config setting:
    the task's run() takes it as an argument of the same name)."""

    name: str  # run()'s parameter; the option is --<name with dashes> unless positional
    help: str
    short: str | None = None  # e.g. "-o"
    required: bool = False
    positional: bool = False
    default: str | None = None

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        if self.positional:
            parser.add_argument(self.name, help=self.help)
            return
        flags = [f for f in (self.short, "--" + self.name.replace("_", "-")) if f]
        parser.add_argument(*flags, required=self.required, default=self.default, help=self.help)


@dataclass(frozen=True)
class Command:
    """One `meddifffm` command made of declarations: the files its run() takes, its config, and where
    run() lives (imported only when the command runs, so building the command line imports no torch)."""

    name: str
    help: str
    module: str  # "MedDiffFMLogic.tasks.denoise": run(config, <files>..., progress=...)
    config: type
    files: tuple[File, ...] = ()
    options: tuple[str, ...] = ("windows", "common")  # option blocks of cli_args added after the settings
    adjust: Callable[[argparse.Namespace], dict] | None = None  # config values the plain mapping cannot give

    def add_to(self, subparsers) -> argparse.ArgumentParser:
        from ..cli_args import add_common, add_threads

        p = subparsers.add_parser(self.name, help=self.help)
        for f in self.files:
            f.add_to(p)
        add_settings(p, self.config)
        if "windows" in self.options:
            add_threads(p)
        add_common(p)
        p.set_defaults(run=self.run_from_args)
        return p

    def run_from_args(self, args: argparse.Namespace, progress) -> dict[str, str]:
        given = self.adjust(args) if self.adjust else {}
        config = config_from_args(self.config, args, **given)
        files = {f.name: getattr(args, f.name) for f in self.files}
        return importlib.import_module(self.module).run(config, **files, progress=progress)


def _group(parser: argparse.ArgumentParser, title: str | None):
    if title is None:
        return parser
    groups = parser.__dict__.setdefault("_meddifffm_groups", {})
    if title not in groups:
        groups[title] = parser.add_argument_group(title)
    return groups[title]


def _exclusive(parser: argparse.ArgumentParser, container, name: str):
    groups = parser.__dict__.setdefault("_meddifffm_exclusive", {})
    if name not in groups:
        groups[name] = container.add_mutually_exclusive_group()
    return groups[name]
