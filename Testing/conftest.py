"""Shared fixtures: tiny networks whose output is not trivially zero, and a saved tiny model."""

from __future__ import annotations

import locale

import pytest
import torch

from MedDiffFMLogic.modelfiles import save_model
from MedDiffFMLogic.network import TINY, MedDiffFMNet

TEST_THREADS = 2
torch.set_num_threads(TEST_THREADS)


@pytest.fixture(autouse=True)
def restore_torch_globals():
    """Undo process-wide torch settings a test changes (a Trainer turns on deterministic algorithms
    and sets its thread count, as a training process should), so later tests run as configured."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def restore_locale():
    """GDCM's DICOM writer (the tests write DICOM series through SimpleITK) leaves the process in the C
    locale, where Python's default text encoding is ASCII: a later test reading a UTF-8 README failed."""
    previous = locale.setlocale(locale.LC_ALL)
    yield
    locale.setlocale(locale.LC_ALL, previous)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks gain nothing from a second thread, and on a shared 2-core machine two threads
    spin against other processes (measured: 0.3 s per 32^3 evaluation with one, 1-3 s with two).
    A module asks for it with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_tiny_net(seed: int = 0) -> MedDiffFMNet:
    """A TINY network with its zero-initialised output layers randomised, so its output is informative."""
    torch.manual_seed(seed)
    net = MedDiffFMNet(TINY).eval()
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1 and not p.abs().sum():
                p.normal_(0.0, 0.05)
    return net


@pytest.fixture
def tiny_net() -> MedDiffFMNet:
    return make_tiny_net()


@pytest.fixture
def tiny_model_card(tmp_path) -> "Path":  # noqa: F821
    return save_model(
        make_tiny_net(), tmp_path / "models", name="tiny-test", kind="base",
        architecture=TINY.to_dict(), working_spacing=(4.0, 4.0, 4.0),
        description="random tiny network for tests",
    )
