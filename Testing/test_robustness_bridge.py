"""Robustness through the Slicer bridge (slicer-core): a volume that is no CT in HU gets the engine's
own message, no traceback, and leaves the scene as it was. (--force itself is tested through the CLI
in test_robustness.py; the batch API passes it verbatim with TaskParameters(extra=("--force",)).)"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is needed for the bridge tests")

from test_bridge import add_volume, phantom_voxels, scene, tiny_params  # noqa: E402,F401  (scene: the fixture)
from MedDiffFMLib import bridge, runner  # noqa: E402
from MedDiffFMLib.jobs import Inputs, Processor  # noqa: E402


def test_an_mr_volume_gets_the_engines_message_and_leaves_the_scene_unchanged(scene, tiny_model_card, tmp_path):
    # Magnitude-MR-like voxels: non-negative, no air, lung or fat in HU terms.
    mr = (np.abs(phantom_voxels().astype(np.int32)) + 200).astype(np.uint16)
    volume = add_volume(scene, mr, name="T1")
    before = bridge.scene_snapshot(scene, [volume])
    temp = tmp_path / "temp"
    temp.mkdir()
    processor = Processor(scene, temp_root=temp)
    with pytest.raises(runner.EngineError) as error:
        processor.process("denoise", tiny_params(tiny_model_card, steps=1, noise_level=20.0), Inputs(volume=volume))
    message = str(error.value)
    assert "does not look like a CT in Hounsfield units" in message and "--force" in message
    assert "Traceback" not in message
    assert bridge.scene_snapshot(scene, [volume]) == before
    assert not any(temp.iterdir())

