"""The engine's Python packages in Slicer's Python: which Slicer versions can run it, which requirements
are missing or at the wrong version (read from the packages' metadata, never by importing them: torch
must not load into Slicer's GUI process), and the install sequence that turns any failure into one
message for the user. The installers themselves (pip, light-the-torch) need the Slicer app; the module's
Logic passes them in as steps, so everything here is plain Python and tested with pytest.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

try:  # Slicer's Python has packaging (pip needs it); pip's vendored copy where it is not importable
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version
except ImportError:  # pragma: no cover
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.version import InvalidVersion, Version

REQUIREMENTS = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
# torch comes from the PyTorch extension's light-the-torch (the build for the GPU), not from plain pip.
# Only a lower bound: another extension's newer torch must not be downgraded.
TORCH_REQUIREMENT = "torch>=2.8"

# Slicer 5.6 and 5.8 ship Python 3.9, which no MONAI 1.6 and no torch after 2.8 supports (the engine is
# built and tested on MONAI 1.6); Slicer 5.10 ships Python 3.12.
MINIMUM_SLICER = (5, 10)
MINIMUM_PYTHON = (3, 10)

# Distribution name -> the module it installs, where the two differ.
IMPORT_NAMES = {"scikit-image": "skimage", "pillow": "PIL"}


class InstallError(RuntimeError):
    """The dependencies cannot be installed or are still unmet; the message is for the user."""


# ------------------------------------------------------------------------------------ Slicer version


def unsupported(slicer_version: Sequence[int], python_version: Sequence[int]) -> str | None:
    """Why this Slicer cannot run MedDiffFM (a message naming the version needed), or None."""
    slicer_mm = tuple(int(v) for v in slicer_version[:2])
    python_mm = tuple(int(v) for v in python_version[:2])
    if slicer_mm >= MINIMUM_SLICER and python_mm >= MINIMUM_PYTHON:
        return None
    return (f"MedDiffFM needs 3D Slicer {MINIMUM_SLICER[0]}.{MINIMUM_SLICER[1]} or later (with Python "
            f"{MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]} or later); this is Slicer {slicer_mm[0]}.{slicer_mm[1]} "
            f"with Python {python_mm[0]}.{python_mm[1]}, for which the engine's packages (PyTorch 2.8 or later, "
            "MONAI 1.6) do not exist. Install the current Slicer from https://download.slicer.org.")


# -------------------------------------------------------------------------------- requirements


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
    """Whether a module can be found (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution, from its metadata (nothing is imported), or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Unmet:
    """A requirement that is not installed, or installed at a version outside its specifier."""

    requirement: str  # as written in requirements.txt: what to install
    installed: str | None  # the version found, None when the package is not installed

    @property
    def name(self) -> str:
        return distribution_name(self.requirement)

    def __str__(self) -> str:
        wanted = str(Requirement(self.requirement).specifier) or "any version"
        if self.installed is None:
            return f"{self.name} (not installed; needs {wanted})"
        return f"{self.name} ({self.installed} installed; needs {wanted})"


def satisfied(version: str, requirement: str) -> bool:
    """Whether an installed version meets a requirement's specifier. Local builds (2.9.0+cu128) and
    pre-releases count; a version that cannot be parsed does not."""
    try:
        return Requirement(requirement).specifier.contains(Version(version), prereleases=True)
    except (InvalidVersion, InvalidRequirement):
        return False


def unmet(requirement_lines: Iterable[str],
          version_of: Callable[[str], str | None] = installed_version) -> list[Unmet]:
    """The requirements whose package is missing or at a version outside the specifier. Requirements
    whose environment marker does not apply here are met."""
    found = []
    for line in requirement_lines:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = version_of(requirement.name)
        if version is None or not satisfied(version, line):
            found.append(Unmet(line, version))
    return found


def check(path: str | Path = REQUIREMENTS,
          version_of: Callable[[str], str | None] = installed_version) -> list[Unmet]:
    """Everything the engine needs that Slicer's Python lacks: torch first, then requirements.txt."""
    return unmet([TORCH_REQUIREMENT, *requirements(path)], version_of)


def recheck(path: str | Path = REQUIREMENTS) -> list[Unmet]:
    """check() after an installation: the finders cache directory listings (by modification time, which
    a quick install may leave unchanged), so they must forget what they saw before."""
    importlib.invalidate_caches()
    # The metadata finder's own cache, which importlib.invalidate_caches() clears only from Python 3.12
    # on (3.11 declares the method without @classmethod: call it on an instance).
    finder = getattr(importlib.metadata, "MetadataPathFinder", None)
    if finder is not None and hasattr(finder, "invalidate_caches"):
        finder().invalidate_caches()
    return check(path)


def missing(path: str | Path = REQUIREMENTS) -> tuple[bool, list[str]]:
    """(torch is unmet, the other unmet requirement lines); check() says why each is unmet."""
    found = check(path)
    return (any(u.name == "torch" for u in found), [u.requirement for u in found if u.name != "torch"])


def torch_install_command(python: str, requirement: str = TORCH_REQUIREMENT) -> list[str]:
    """light-the-torch (the PyTorch extension's installer, which picks the build that fits the GPU
    driver) installing torch alone: no torchvision, which the engine does not use."""
    return [str(python), "-m", "light_the_torch", "install", requirement]


# ------------------------------------------------------------------------------------- installing


class Installer:
    """Runs the install steps, one installation at a time. Slicer's pip helpers keep the GUI's event
    loop running while pip works, so a second Apply can arrive during an installation: it is refused
    (and the widget disables Apply while `busy`)."""

    def __init__(self, on_busy_changed: Callable[[bool], None] | None = None) -> None:
        self.busy = False
        self.on_busy_changed = on_busy_changed

    def _set_busy(self, busy: bool) -> None:
        self.busy = busy
        if self.on_busy_changed is not None:
            self.on_busy_changed(busy)

    def run(self, steps: Sequence[tuple[str, Callable[[], object]]]) -> None:
        """Run each (what, step) in order. Any exception a step raises (pip's CalledProcessError, an
        ImportError, a RuntimeError of the PyTorch extension...) becomes an InstallError whose message
        says what failed and what to do; the original is its __cause__."""
        if self.busy:
            raise InstallError("MedDiffFM is already installing its Python packages; wait until it is done.")
        self._set_busy(True)
        try:
            for what, step in steps:
                try:
                    step()
                except InstallError:
                    raise
                except subprocess.CalledProcessError as exc:
                    raise InstallError(
                        f"Installing {what} failed (the installer exited with code {exc.returncode}). Check the "
                        "internet connection and the log in the Python console, then click Apply again.") from exc
                except Exception as exc:
                    raise InstallError(f"Installing {what} failed: {exc}") from exc
        finally:
            self._set_busy(False)


def ensure(installer: Installer, install_torch: Callable[[str], object],
           install_packages: Callable[[list[str]], object], path: str | Path = REQUIREMENTS,
           confirm: Callable[[list[Unmet]], bool] | None = None) -> bool:
    """Install whatever check() finds unmet: torch with install_torch(requirement), the rest with
    install_packages(requirement lines). Returns False when confirm() declines, True when everything is
    met afterwards; raises InstallError otherwise."""
    if installer.busy:  # a second Apply while the first one's installation runs
        raise InstallError("MedDiffFM is already installing its Python packages; wait until it is done.")
    found = check(path)
    if not found:
        return True
    if confirm is not None and not confirm(found):
        return False
    torch = [u for u in found if u.name == "torch"]
    others = [u for u in found if u.name != "torch"]
    steps: list[tuple[str, Callable[[], object]]] = []
    if torch:
        steps.append(("PyTorch", lambda: install_torch(torch[0].requirement)))
    if others:
        steps.append((", ".join(u.name for u in others), lambda: install_packages([u.requirement for u in others])))
    installer.run(steps)
    left = recheck(path)
    if left:
        raise InstallError("Some packages are still missing or at the wrong version after installing: "
                           f"{'; '.join(map(str, left))}. Restart Slicer and click Apply again.")
    return True
