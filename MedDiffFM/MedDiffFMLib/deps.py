"""Which of the engine's Python packages are missing from Slicer's Python, without importing them
(importing torch in Slicer's GUI process is what the module avoids). Installing them needs the Slicer
app and lives in the module's Logic; this part is plain Python so that it is tested."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
TORCH_REQUIREMENT = "torch>=2.8"
# Distribution name -> the module it installs, where the two differ.
IMPORT_NAMES = {"scikit-image": "skimage", "pillow": "PIL"}


def requirements(path: str | Path = REQUIREMENTS) -> list[str]:
    """The requirement lines of requirements.txt (comments and blank lines dropped)."""
    lines = [line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines()]
    return [line for line in lines if line]


def distribution_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip()


def import_name(requirement: str) -> str:
    name = distribution_name(requirement)
    return IMPORT_NAMES.get(name.lower(), name)


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(path: str | Path = REQUIREMENTS) -> tuple[bool, list[str]]:
    """(torch is missing, the other requirements whose module cannot be found)."""
    return not installed("torch"), [r for r in requirements(path) if not installed(import_name(r))]
