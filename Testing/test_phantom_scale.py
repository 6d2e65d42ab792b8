"""The patient's scale: by default a phantom's patient shrinks to fit its field of view; with
patient_scale the patient keeps its size in millimetres and the field of view cuts it, as a real scan's
does (training data for a model whose grid is in millimetres needs true sizes)."""

import numpy as np
import pytest
import SimpleITK as sitk

from MedDiffFMLogic.errors import InputError
from MedDiffFMLogic.phantoms import PhantomConfig, make_phantom
from MedDiffFMLogic.training.config import PhantomSetConfig


def _body_width_mm(config: PhantomConfig) -> float:
    body = sitk.GetArrayFromImage(make_phantom(config).labels) > 0
    columns = np.where(body.any(axis=(0, 1)))[0]
    return float(columns[-1] - columns[0] + 1) * config.spacing[0]


def test_a_fixed_patient_scale_keeps_adult_size_where_fitting_shrinks_the_patient():
    small_fov = dict(region="chest", size=(48, 48, 16), spacing=(6.0, 6.0, 6.0), seed=3)  # 288 mm across
    fitted = _body_width_mm(PhantomConfig(**small_fov))
    adult = _body_width_mm(PhantomConfig(**small_fov, patient_scale=1.0))
    assert fitted < 0.94 * 288 and adult > 1.15 * fitted  # the adult chest is cut by the field of view


@pytest.mark.parametrize("scale", [0.0, -1.0, 5.0, float("nan"), "big"])
def test_a_bad_patient_scale_is_refused(scale):
    with pytest.raises(InputError, match="patient_scale"):
        PhantomConfig(patient_scale=scale)


def test_training_phantom_sets_pass_the_scale_and_contrast_through():
    config = PhantomSetConfig(patient_scale=1.0)
    assert config.patient_scale == 1.0 and config.contrast == "random"
    with pytest.raises(InputError, match="contrast"):
        PhantomSetConfig(contrast="venous")


def test_the_arms_can_be_posed_to_match_a_reference():
    # the realism benchmark poses the chest like its reference (arms raised); the seed draws it otherwise
    base = dict(region="chest", size=(48, 48, 24), spacing=(8.0, 8.0, 12.0), seed=0)
    humerus = [label for name, label in _label_indices().items() if name.startswith("humerus")]
    down = sitk.GetArrayFromImage(make_phantom(PhantomConfig(**base, arms_raised=False)).labels)
    up = sitk.GetArrayFromImage(make_phantom(PhantomConfig(**base, arms_raised=True)).labels)
    assert np.isin(down, humerus).sum() > np.isin(up, humerus).sum()  # arms down: the humeri lie beside the chest
    with pytest.raises(InputError, match="arms_raised"):
        PhantomConfig(arms_raised="up")


def _label_indices() -> dict[str, int]:
    from MedDiffFMLogic.anatomy import ANATOMY_CLASSES

    return {name: index for index, name in ANATOMY_CLASSES.items()}
