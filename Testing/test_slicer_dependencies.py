"""The Slicer module's dependency handling, in the plain functions the module's Logic calls: which Slicer
versions are refused, which requirements count as unmet (versions, not just presence), the install
sequence (every failure becomes one message for the user, one installation at a time), the check after
installing (import caches invalidated), and torch installed alone without importing it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "MedDiffFM"
sys.path.insert(0, str(MODULE_DIR))

from MedDiffFMLib import deps  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402


# ------------------------------------------------------------------------------------ Slicer versions


@pytest.mark.parametrize("slicer_version, python_version", [((5, 6), (3, 9)), ((5, 8), (3, 9)), ((5, 8, 1), (3, 9, 10))])
def test_slicer_5_6_and_5_8_are_refused_with_the_version_needed(slicer_version, python_version):
    message = deps.unsupported(slicer_version, python_version)
    assert message is not None
    assert "Slicer 5.10 or later" in message
    assert f"Slicer {slicer_version[0]}.{slicer_version[1]}" in message and "Python 3.9" in message


@pytest.mark.parametrize("slicer_version, python_version", [((5, 10), (3, 12)), ((5, 12, 3), (3, 12, 10)), ((6, 0), (3, 13))])
def test_slicer_5_10_and_later_are_accepted(slicer_version, python_version):
    assert deps.unsupported(slicer_version, python_version) is None


def test_the_supported_versions_are_stated_where_users_and_builders_look():
    readme = (MODULE_DIR / "README.md").read_text()
    assert "Slicer 5.10" in readme and "5.6" in readme and "5.8" in readme
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert 'Slicer_VERSION VERSION_LESS "5.10")' in cmake and "FATAL_ERROR" in cmake
    assert deps.MINIMUM_SLICER == (5, 10)


@pytest.mark.parametrize("version, refused", [("5.6", True), ("5.8", True), ("5.10", False), ("5.12", False)])
def test_building_the_extension_against_an_old_slicer_stops_with_the_version_needed(version, refused, tmp_path):
    """The version check of MedDiffFM/CMakeLists.txt, run by CMake itself (script mode)."""
    import re
    import shutil

    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    block = re.search(r"^if\(DEFINED Slicer_VERSION.*?^endif\(\)", text, re.S | re.M).group(0)
    script = tmp_path / "check.cmake"
    script.write_text(f"set(Slicer_VERSION {version})\n{block}\n")
    run = subprocess.run([cmake, "-P", str(script)], capture_output=True, text=True, timeout=60)
    assert (run.returncode != 0) == refused, run.stderr
    if refused:
        assert "needs Slicer 5.10 or later" in run.stderr and f"this is Slicer {version}" in run.stderr


def test_the_module_files_parse_as_python_3_9_so_old_slicers_see_the_refusal():
    """Slicer 5.6/5.8 must load the module far enough to show why it refuses, not a syntax error."""
    import ast

    files = [MODULE_DIR / "MedDiffFM.py", *sorted((MODULE_DIR / "MedDiffFMLib").glob("*.py"))]
    for path in files:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


# ----------------------------------------------------------------------------------- versions count


def test_an_older_package_counts_as_unmet_and_says_which_version_is_needed():
    installed = {"monai": "1.5.2", "torch": "2.7.1+cu118", "numpy": "2.4.0", "scipy": None}.get
    found = deps.unmet(["torch>=2.8", "monai>=1.6.1,<1.7", "numpy>=1.24,<3", "scipy>=1.11"], installed)
    assert [(u.name, u.installed) for u in found] == [("torch", "2.7.1+cu118"), ("monai", "1.5.2"), ("scipy", None)]
    text = [str(u) for u in found]
    assert "1.5.2 installed" in text[1] and "<1.7" in text[1] and ">=1.6.1" in text[1]
    assert "not installed" in text[2]


def test_local_builds_and_newer_versions_in_range_are_met():
    assert deps.unmet(["torch>=2.8"], {"torch": "2.9.0+cu128"}.get) == []
    assert deps.unmet(["monai>=1.6.1,<1.7"], {"monai": "1.6.1"}.get) == []
    assert deps.unmet(["monai>=1.6.1,<1.7"], {"monai": "1.7.0"}.get)[0].installed == "1.7.0"
    assert deps.unmet(["torch>=2.8; python_version < '3'"], {}.get) == []  # a marker that does not apply


def test_this_environment_meets_every_requirement_by_metadata():
    import importlib.metadata

    assert deps.check() == []
    assert deps.missing() == (False, [])
    assert deps.installed_version("monai") == importlib.metadata.version("monai")
    assert deps.installed_version("no-such-distribution-for-meddifffm") is None


def test_requirements_match_the_engines_declared_versions():
    """What the first Apply installs into Slicer is what the engine is built and tested with."""
    declared = {Requirement(r).name.lower(): Requirement(r) for r in
                tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    module = {Requirement(r).name.lower(): Requirement(r) for r in deps.requirements()}
    assert set(declared) - set(module) == {"torch"}
    for name, requirement in module.items():
        assert requirement.specifier == declared[name].specifier, name
    torch_lower = {s.version for s in declared["torch"].specifier if s.operator == ">="}
    assert {s.version for s in Requirement(deps.TORCH_REQUIREMENT).specifier if s.operator == ">="} == torch_lower


def test_the_check_after_installing_sees_a_package_installed_in_the_same_instant(tmp_path, monkeypatch):
    """A package installed while the directory's modification time stays the same (coarse clocks, fast
    installs) is invisible to the metadata finders' cache until the caches are invalidated."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("meddifffm-probe>=1.0\n")
    assert [u.name for u in deps.check(requirements)] == ["meddifffm-probe"]

    before = os.stat(site)
    info = site / "meddifffm_probe-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: meddifffm-probe\nVersion: 1.2\n")
    os.utime(site, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert [u.name for u in deps.check(requirements)] == ["meddifffm-probe"]  # the stale cache
    assert deps.recheck(requirements) == []


# ---------------------------------------------------------------------------------------- installing


def failing_pip() -> None:
    """A real pip run that fails the way Slicer's pip_install does: CalledProcessError."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--quiet", "no-such-package-for-meddifffm"],
                   check=True, capture_output=True, text=True)


def test_a_failing_pip_becomes_an_install_error_with_a_message_for_the_user():
    installer = deps.Installer()
    with pytest.raises(deps.InstallError) as error:
        installer.run([("MONAI", failing_pip)])
    assert isinstance(error.value.__cause__, subprocess.CalledProcessError)
    message = str(error.value)
    assert message.startswith("Installing MONAI failed") and "code 1" in message and "Apply again" in message
    assert not installer.busy


def test_any_other_exception_of_an_installer_becomes_an_install_error_too():
    def missing_helper():
        import no_such_module_for_meddifffm  # noqa: F401  (an installer's own import failing)

    with pytest.raises(deps.InstallError, match="Installing PyTorch failed: No module named"):
        deps.Installer().run([("PyTorch", missing_helper)])


def test_a_second_apply_during_an_installation_is_refused_and_apply_is_off_meanwhile():
    changes, nested = [], []
    installer = deps.Installer(on_busy_changed=changes.append)

    def pip_pumping_events():
        # Slicer's pip helpers process GUI events while pip runs: a second Apply lands here.
        assert installer.busy
        with pytest.raises(deps.InstallError, match="already installing"):
            installer.run([("again", lambda: nested.append("installed twice"))])
        with pytest.raises(deps.InstallError, match="already installing"):
            deps.ensure(installer, lambda r: nested.append(r), lambda r: nested.append(r))

    installer.run([("packages", pip_pumping_events)])
    assert nested == [] and changes == [True, False] and not installer.busy
    with pytest.raises(deps.InstallError):
        installer.run([("MONAI", failing_pip)])
    assert not installer.busy and changes == [True, False, True, False]  # Apply comes back after a failure


def test_ensure_installs_torch_and_the_rest_separately_and_rechecks(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("meddifffm-probe>=1.0\n")
    calls = []

    def install_packages(lines):
        calls.append(lines)
        info = site / "meddifffm_probe-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: meddifffm-probe\nVersion: 1.0\n")

    asked = []
    assert not deps.ensure(deps.Installer(), calls.append, install_packages, requirements,
                           confirm=lambda unmet: asked.append([str(u) for u in unmet]) or False)
    assert calls == [] and asked == [["meddifffm-probe (not installed; needs >=1.0)"]]
    assert deps.ensure(deps.Installer(), calls.append, install_packages, requirements, confirm=lambda unmet: True)
    assert calls == [["meddifffm-probe>=1.0"]]  # torch is met here: only the rest was installed
    assert deps.ensure(deps.Installer(), calls.append, install_packages, requirements)  # met: nothing more
    assert calls == [["meddifffm-probe>=1.0"]]


def test_a_package_still_unmet_after_installing_is_reported(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("meddifffm-never-there>=1.0\n")
    with pytest.raises(deps.InstallError, match="still missing.*meddifffm-never-there.*Restart Slicer"):
        deps.ensure(deps.Installer(), lambda r: None, lambda r: None, requirements)


def test_torch_is_installed_alone_with_light_the_torch_and_never_imported():
    command = deps.torch_install_command("/opt/Slicer/bin/PythonSlicer", deps.TORCH_REQUIREMENT)
    assert command == ["/opt/Slicer/bin/PythonSlicer", "-m", "light_the_torch", "install", "torch>=2.8"]
    assert not any("torchvision" in part for part in command)
    # The check reads metadata: in a fresh interpreter, checking leaves torch unimported.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from MedDiffFMLib import deps; "
            "assert deps.check() == []; assert 'torch' not in sys.modules and 'monai' not in sys.modules")
    subprocess.run([sys.executable, "-c", code, str(MODULE_DIR)], check=True, timeout=60)


# ------------------------------------------------------------------------------------- Apply button


def test_apply_is_off_while_the_dependencies_install_and_on_again_after():
    from MedDiffFMLib import panel

    ready = dict(has_volume=True, has_segment=True)
    assert panel.apply_state("denoise", **ready) == panel.ApplyState(True, "")
    installing = panel.apply_state("denoise", **ready, installing=True)
    assert not installing.enabled and "Installing" in installing.reason
    assert panel.apply_state("denoise", **ready, running=True) == panel.ApplyState(False, "")
    old = deps.unsupported((5, 8), (3, 9))
    assert panel.apply_state("denoise", **ready, unsupported=old) == panel.ApplyState(False, old)
    assert "input volume" in panel.apply_state("denoise", has_volume=False, has_segment=True).reason
    assert "segment" in panel.apply_state("inpaint", has_volume=True, has_segment=False).reason
    assert panel.apply_state("synthesize", has_volume=False, has_segment=False).enabled
    assert panel.apply_state("anomaly", has_volume=True, has_segment=False).enabled  # its segment is optional
