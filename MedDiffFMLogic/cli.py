"""The `meddifffm` command line. Every command takes --device, --seed and --progress.

Exit codes: 0 success, 1 a user-facing error (message on stderr, and a JSON error line with
--progress json), 2 bad command-line usage, 130 interrupted by Ctrl+C (SIGINT), 143 stopped by SIGTERM
(`kill`, Slicer's Cancel). An interrupted run writes the JSON error line "interrupted ..." too, and leaves
no partial output file and no temporary file behind (outputs go to a temporary file renamed at the end).
--force (every command) runs on an input whose values are implausible for a CT in HU, with a warning.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path

from .cli_args import Parser, add_common, triple
from .errors import InputError, Interrupted, MedDiffFMError
from .progress import Progress
from .regions import REGIONS
from .settings import Setting, check_numbers
from .settings.commands import COMMANDS
from .training import commands as training_commands

# phantom's numbers, declared like the tasks' settings so that the one number check covers them.
PHANTOM = {
    "region": Setting("chest", "body region of the phantom (default %(default)s)", choices=REGIONS),
    "size": Setting((96, 96, 64), "voxels X,Y,Z (default 96,96,64)", type=triple(int), minimum=1),
    "spacing": Setting((2.0, 2.0, 2.5), "mm X,Y,Z (default 2,2,2.5)", type=triple(float), above=0),
    "lesions": Setting(0, "number of lesions to insert (default 0)", type=int, minimum=0),
    "dose": Setting(0.25, "dose fraction of the low-dose scan, in (0, 1] (default 0.25)", type=float, above=0,
                    maximum=1),
    "contrast": Setting("native", "contrast phase; random: drawn from the seed (default %(default)s)",
                        choices=("native", "arterial", "portal_venous", "random")),
}


def version() -> str:
    """The engine's version: the installed package's, else the checkout's pyproject.toml."""
    from importlib import metadata

    try:
        return metadata.version("MedDiffFMLogic")
    except metadata.PackageNotFoundError:
        import re

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        found = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M) if pyproject.exists() else None
        return found.group(1) if found else "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="meddifffm",
        description="MedDiff-FM: one 3D CT diffusion model for head-and-neck, chest and abdomen.",
    )
    parser.add_argument("--version", action="version", version=f"meddifffm {version()}")
    # Every command's parser is a Parser (no prefix matching, suggestions), training's included.
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("models", help="list the models the engine knows")
    p.add_argument("--models-dir", action="append", default=[], help="another folder of model cards")
    p.add_argument("--json", action="store_true", help="print the catalogue as JSON")
    add_common(p, only=("progress",))  # no model runs: --device, --seed and --force would do nothing
    p.set_defaults(run=lambda args, progress: _models(args))

    p = sub.add_parser("phantom", help="write a procedural CT phantom (and its labels, lesions, low-dose scan)")
    PHANTOM["region"].add_to(p, "region")
    p.add_argument("-o", "--output", required=True, help="CT output (.nii.gz, .nrrd, .mha)")
    p.add_argument("--labels", help="organ label map output (TotalSegmentator class indices)")
    PHANTOM["size"].add_to(p, "size")
    PHANTOM["spacing"].add_to(p, "spacing")
    PHANTOM["lesions"].add_to(p, "lesions")
    p.add_argument("--lesion-mask", help="lesion mask output")
    p.add_argument("--low-dose", help="also write a simulated low-dose scan here")
    PHANTOM["dose"].add_to(p, "dose")
    PHANTOM["contrast"].add_to(p, "contrast")
    add_common(p, only=("seed", "progress"))  # no network runs and no input is read
    p.set_defaults(run=lambda args, progress: _phantom(args))

    # The tasks and the demo: commands built from their settings' declarations (settings/).
    for command in COMMANDS:
        command.add_to(sub)
    # Training's commands (train, finetune, cut-regions) build their own parsers, like the two above.
    training_commands.add_command(sub)
    return parser


def _models(args) -> dict[str, str]:
    import json

    from .modelfiles import list_models

    entries = list_models(args.models_dir)
    if args.json:
        print(json.dumps([
            {"name": e.name, "card": str(e.card_path), "source": e.source, "problem": e.problem,
             "kind": e.card.kind if e.card else None,
             "intended_use": e.card.intended_use if e.card else None,
             "licence": e.card.licence if e.card else None}
            for e in entries
        ], indent=2))
    elif not entries:
        print("no models found (bundled folder, user folder, MEDDIFFFM_MODELS)", file=sys.stderr)
    else:
        rows = [("NAME", "SOURCE", "KIND", "LICENCE", "INTENDED USE")]
        rows += [(e.name, e.source, e.card.kind, e.card.licence, e.card.intended_use) if e.card
                 else (e.name, e.source, "BROKEN", "", e.problem) for e in entries]
        # Columns as wide as their widest entry, so a long name does not shift the row.
        widths = [max(len(str(r[k])) for r in rows) for k in range(4)]
        for row in rows:
            print("  ".join(f"{str(v):<{w}}" for v, w in zip(row, widths)) + "  " + str(row[4]))
    return {}


def _phantom(args) -> dict[str, str]:
    from . import ctio
    from .phantoms import PhantomConfig, make_phantom, simulate_low_dose
    from .phantoms.scanner import measure_noise_hu

    if args.lesion_mask and args.lesions < 1:
        raise InputError("--lesion-mask needs --lesions 1 or more")
    targets = [args.output, args.labels, args.lesion_mask, args.low_dose]
    given = [Path(t).resolve() for t in targets if t]
    if len(set(given)) != len(given):
        raise InputError("the output paths must differ from one another")
    phantom = make_phantom(PhantomConfig(
        region=args.region, size=args.size, spacing=args.spacing, lesions=args.lesions, seed=args.seed,
        contrast=args.contrast,
    ))
    if args.contrast == "random":
        print(f"meddifffm phantom: contrast phase {phantom.contrast} (drawn from seed {args.seed})", file=sys.stderr)
    outputs = {"image": str(ctio.write_image(phantom.image, args.output))}
    if args.labels:
        outputs["labels"] = str(ctio.write_image(phantom.labels, args.labels))
    if args.lesion_mask:
        outputs["lesion_mask"] = str(ctio.write_image(phantom.lesion_mask, args.lesion_mask))
    if args.low_dose:
        low = simulate_low_dose(phantom.image, args.dose, seed=args.seed)
        outputs["low_dose"] = str(ctio.write_image(low, args.low_dose))
        noise = measure_noise_hu(phantom.image, low)  # measured on the scan, not assumed from the dose
        print(f"meddifffm phantom: low-dose noise {noise:.1f} HU (SD in soft tissue at dose {args.dose:g})", file=sys.stderr)
    return outputs


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # One line a user can read (e.g. "going on with fewer windows"), not a source location.
    print(f"meddifffm: warning: {message}", file=sys.stderr)


def _on_sigterm(signum, frame) -> None:
    # Stop like Ctrl+C does, so the same cleanup runs; later signals must not cut that cleanup short
    # (Slicer's Cancel follows with SIGKILL if the process does not end within its grace time).
    signal.signal(signum, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (e.g. main() called from a worker)
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.showwarning = _show_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    command_parser = parser.command_parsers()[args.command]
    mode = args.progress or ("bar" if sys.stderr.isatty() else "none")
    progress = Progress(mode)
    force = contextlib.nullcontext()
    if getattr(args, "force", False):
        from . import ctio  # SimpleITK: only for a command that reads images, not for --help

        force = ctio.allow_unusual_hu()
    try:
        check_numbers(command_parser, args)  # every number of every command, before any work
        threads = getattr(args, "threads", None)  # None or 0: torch's own choice
        if threads:
            import torch

            torch.set_num_threads(threads)
        with _sigterm_as_interrupt(), force:
            outputs = args.run(args, progress)
    except MedDiffFMError as exc:
        progress.error(str(exc))
        print(f"meddifffm {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except MemoryError as exc:
        # Not a bug to show a traceback for: a volume or setting too large for this computer's RAM.
        message = (
            f"out of memory ({exc or 'RAM exhausted'}): this needs more RAM than the computer has free; "
            "crop or resample the volume, lower --window-batch or --window, or close other programs"
        )
        progress.error(message)
        print(f"meddifffm {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        name = signal.Signals(signum).name
        progress.error(f"interrupted ({name}); no file was left half-written")
        print(f"meddifffm {args.command}: interrupted ({name}); no file was left half-written", file=sys.stderr)
        return 128 + int(signum)
    progress.done(outputs)
    if mode != "json":
        for key, value in outputs.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
