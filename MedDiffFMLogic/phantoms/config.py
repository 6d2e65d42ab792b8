"""Phantom settings, result type and reference tables: labels per structure, accepted HU, lesion models, tissues.

Contrast convention of the tables: **non-contrast** (unenhanced) CT, the default phase; see ``contrast.py``
for the enhanced phases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import SimpleITK as sitk

from ..errors import InputError
from ..regions import REGIONS, check_region
from .contrast import CONTRAST_CHOICES

_LUNG_LOBES = (
    "lung_upper_lobe_left",
    "lung_lower_lobe_left",
    "lung_upper_lobe_right",
    "lung_middle_lobe_right",
    "lung_lower_lobe_right",
)
_VERTEBRAE = tuple(
    [f"vertebrae_C{i}" for i in range(1, 8)]
    + [f"vertebrae_T{i}" for i in range(1, 13)]
    + [f"vertebrae_L{i}" for i in range(1, 6)]
    + ["vertebrae_S1"]
)
_RIBS = tuple(f"rib_{side}_{i}" for side in ("left", "right") for i in range(1, 13))

# Realistic mean HU (non-contrast CT) of each labelled structure, measured over the label eroded by one
# voxel. Sources: textbook CT-number tables (M. Prokop, M. Galanski, "Spiral and Multislice Computed
# Tomography of the Body", Thieme 2003; T. M. Buzug, "Computed Tomography", Springer 2008; the tables
# in W. A. Kalender, "Computed Tomography", 3rd ed., Publicis 2011), widened where a label holds several
# tissues (bone = cortex + marrow, lungs = parenchyma + vessels, bowel = wall + content + gas).
REFERENCE_HU_RANGES: dict[str, tuple[float, float]] = {
    "liver": (45.0, 75.0),
    "spleen": (35.0, 60.0),
    "kidney_left": (20.0, 45.0),
    "kidney_right": (20.0, 45.0),
    "pancreas": (25.0, 55.0),
    "gallbladder": (-5.0, 25.0),
    "adrenal_gland_left": (0.0, 45.0),
    "adrenal_gland_right": (0.0, 45.0),
    "stomach": (-700.0, 50.0),
    "duodenum": (-300.0, 50.0),
    "small_bowel": (-300.0, 50.0),
    "colon": (-800.0, 40.0),
    "urinary_bladder": (-5.0, 25.0),
    "esophagus": (-50.0, 60.0),
    "trachea": (-1010.0, -500.0),
    "thyroid_gland": (70.0, 130.0),
    "heart": (30.0, 55.0),
    "aorta": (30.0, 60.0),
    "inferior_vena_cava": (30.0, 60.0),
    "superior_vena_cava": (30.0, 60.0),
    "portal_vein_and_splenic_vein": (25.0, 60.0),
    "brachiocephalic_trunk": (25.0, 60.0),
    "brachiocephalic_vein_left": (25.0, 60.0),
    "brachiocephalic_vein_right": (25.0, 60.0),
    "subclavian_artery_left": (25.0, 60.0),
    "subclavian_artery_right": (25.0, 60.0),
    "common_carotid_artery_left": (25.0, 60.0),
    "common_carotid_artery_right": (25.0, 60.0),
    "iliac_artery_left": (25.0, 60.0),
    "iliac_artery_right": (25.0, 60.0),
    "iliac_vena_left": (25.0, 60.0),
    "iliac_vena_right": (25.0, 60.0),
    "brain": (20.0, 45.0),
    "spinal_cord": (20.0, 45.0),
    "skull": (400.0, 1500.0),
    "sternum": (150.0, 800.0),
    "costal_cartilages": (60.0, 250.0),
    "clavicula_left": (200.0, 1000.0),
    "clavicula_right": (200.0, 1000.0),
    "scapula_left": (200.0, 1000.0),
    "scapula_right": (200.0, 1000.0),
    "humerus_left": (150.0, 1000.0),  # cancellous head, thick-walled shaft with fatty marrow
    "humerus_right": (150.0, 1000.0),
    "hip_left": (150.0, 900.0),
    "hip_right": (150.0, 900.0),
    "sacrum": (150.0, 800.0),
    "autochthon_left": (35.0, 65.0),
    "autochthon_right": (35.0, 65.0),
    "iliopsoas_left": (35.0, 65.0),
    "iliopsoas_right": (35.0, 65.0),
    **{name: (-930.0, -700.0) for name in _LUNG_LOBES},
    **{name: (150.0, 800.0) for name in _VERTEBRAE},
    **{name: (200.0, 1000.0) for name in _RIBS},
}

# Lesion models per region: where lesions go and how they differ from their organ.
#   organs: label names of the host organ (lesions lie wholly inside their union);
#   mode "absolute": a kind's hu range is the lesion's HU; "relative": organ HU + a draw from it;
#   kinds: what a lesion can be, drawn by weight (hu: range; halo_hu: a ground-glass part; core: the solid
#   core's share of the radius; shapes: boundary forms, see lesions.py); hu: every kind's range (for reports);
#   irregularity: relative amplitude of the boundary's random bumps where a kind names no shapes.
_NODULE_SHAPES = ("round", "lobulated", "spiculated")
_LESION_KINDS: dict[str, tuple[dict, ...]] = {
    "chest": (
        {"name": "solid nodule", "weight": 0.5, "hu": (20.0, 60.0), "texture": 8.0, "shapes": _NODULE_SHAPES},
        {"name": "part-solid nodule", "weight": 0.25, "hu": (10.0, 50.0), "halo_hu": (-650.0, -400.0),
         "core": (0.35, 0.6), "texture": 25.0, "shapes": ("round", "lobulated")},
        {"name": "ground-glass nodule", "weight": 0.25, "hu": (-650.0, -400.0), "halo_hu": (-650.0, -400.0),
         "texture": 30.0, "shapes": ("round", "lobulated")},
    ),
    "abdomen": (
        {"name": "hypodense liver lesion", "weight": 0.7, "hu": (-60.0, -30.0), "texture": 5.0},
        {"name": "hyperdense liver lesion", "weight": 0.3, "hu": (25.0, 50.0), "texture": 6.0},
    ),
    "head_neck": (
        {"name": "hyperdense brain lesion", "weight": 0.5, "hu": (25.0, 45.0), "texture": 3.0},
        {"name": "hypodense brain lesion", "weight": 0.5, "hu": (-25.0, -12.0), "texture": 3.0},
    ),
}
LESION_MODELS: dict[str, dict] = {
    "chest": {"organs": _LUNG_LOBES, "mode": "absolute", "irregularity": 0.18},
    "abdomen": {"organs": ("liver",), "mode": "relative", "irregularity": 0.10},
    "head_neck": {"organs": ("brain",), "mode": "relative", "irregularity": 0.12},
}
for _region, _model in LESION_MODELS.items():
    _model["kinds"] = _LESION_KINDS[_region]
    _model["hu"] = tuple(k["hu"] for k in _LESION_KINDS[_region])

# Base tissue values (mean HU, per-seed jitter SD, texture SD), non-contrast CT.
_T = {
    "air": (-1000.0, 0.0, 2.0),
    "fat": (-100.0, 5.0, 8.0),
    "muscle": (50.0, 3.0, 6.0),
    "scalp": (30.0, 3.0, 8.0),
    "liver": (60.0, 4.0, 6.0),
    "spleen": (48.0, 3.0, 5.0),
    "kidney": (32.0, 3.0, 6.0),
    "adrenal": (25.0, 4.0, 6.0),
    "pancreas": (42.0, 3.0, 10.0),
    "gallbladder": (10.0, 3.0, 3.0),
    "blood": (42.0, 2.0, 4.0),
    "myocardium": (46.0, 2.0, 5.0),
    "gi_wall": (45.0, 3.0, 6.0),
    "fluid": (15.0, 4.0, 5.0),
    "stool": (-30.0, 10.0, 45.0),
    "bladder": (8.0, 3.0, 3.0),
    "lung": (-850.0, 12.0, 22.0),
    "cortical": (850.0, 60.0, 40.0),
    "cancellous": (230.0, 25.0, 30.0),
    "rib_cortex": (800.0, 60.0, 40.0),
    "rib_marrow": (280.0, 30.0, 30.0),
    "skull_table": (1300.0, 80.0, 50.0),
    "diploe": (550.0, 50.0, 40.0),
    "teeth": (1700.0, 100.0, 40.0),
    "cartilage": (110.0, 10.0, 10.0),
    "disc": (80.0, 5.0, 6.0),
    "csf": (8.0, 2.0, 2.0),
    "cord": (35.0, 2.0, 3.0),
    "grey": (40.0, 1.5, 3.0),
    "white": (28.0, 1.5, 3.0),
    "deep_grey": (37.0, 1.5, 3.0),
    "thyroid": (100.0, 8.0, 6.0),
    "eye": (10.0, 2.0, 2.0),
    "lens": (120.0, 10.0, 3.0),
    "parotid": (10.0, 5.0, 8.0),
    "trachea_wall": (60.0, 5.0, 8.0),
    "table_shell": (250.0, 0.0, 0.0),
    "table_core": (-850.0, 0.0, 0.0),
    # blood compartments and kidney parts, equal to blood and kidney without contrast (see contrast.py)
    "artery": (42.0, 2.0, 4.0),
    "vein": (42.0, 2.0, 4.0),
    "upper_vein": (42.0, 2.0, 4.0),  # the veins of the arms and the SVC, where the contrast comes in
    "portal": (42.0, 2.0, 4.0),
    "heart_left": (42.0, 2.0, 4.0),
    "heart_right": (42.0, 2.0, 4.0),
    "pulm_art": (42.0, 2.0, 4.0),
    "pulm_vein": (42.0, 2.0, 4.0),
    "kidney_medulla": (30.0, 3.0, 5.0),
    "urine": (8.0, 3.0, 3.0),
    "lymph_node": (35.0, 4.0, 5.0),
}
# ---------------------------------------------------------------------------------------------------
# Public data types
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhantomConfig:
    region: str = "chest"  # head_neck | chest | abdomen
    size: tuple[int, int, int] = (96, 96, 64)  # voxels along x, y, z (SimpleITK order)
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.5)  # mm, anisotropic allowed
    lesions: int = 0  # number of lesions to insert
    lesion_radius_mm: tuple[float, float] = (4.0, 12.0)  # min, max radius
    seed: int = 0
    contrast: str = "native"  # native | arterial | portal_venous | random (drawn from the seed)
    # None: the patient shrinks (never grows) so that the region fits the field of view; a number: the
    # patient at that scale (1 = adult size, the seed still varies it), cut by the field of view as a
    # real scan's is: training data for a model whose grid is in millimetres needs true sizes
    patient_scale: float | None = None
    # None: arms raised or down as drawn from the seed (a share by region, limbs.ARMS_RAISED); True/False:
    # posed so, e.g. to match a reference scan's pose
    arms_raised: bool | None = None

    def __post_init__(self):
        if self.contrast not in CONTRAST_CHOICES:
            raise InputError(f"contrast must be one of {', '.join(CONTRAST_CHOICES)}, got {self.contrast!r}")
        check_region(self.region)
        if self.region not in REGIONS:
            raise InputError(f"a phantom needs a concrete region; choose one of {', '.join(REGIONS)}")
        def numbers(value, n):
            try:
                out = [float(v) for v in value]
            except (TypeError, ValueError):
                return None
            return out if len(out) == n and all(math.isfinite(v) for v in out) else None

        size = numbers(self.size, 3)
        if size is None or any(v != int(v) or v < 8 for v in size):
            raise InputError(f"phantom size must be three integers >= 8 (x, y, z), got {self.size!r}")
        spacing = numbers(self.spacing, 3)
        if spacing is None or any(v <= 0 for v in spacing):
            raise InputError(f"phantom spacing must be three positive numbers in mm, got {self.spacing!r}")
        for name in ("lesions", "seed"):
            value = numbers([getattr(self, name)], 1) if not isinstance(getattr(self, name), str) else None
            if value is None or value[0] != int(value[0]) or value[0] < 0:
                raise InputError(f"{name} must be a non-negative integer, got {getattr(self, name)!r}")
        if self.patient_scale is not None:
            scale = numbers([self.patient_scale], 1)
            if scale is None or not 0.3 <= scale[0] <= 2.0:
                raise InputError(f"patient_scale must be a number in [0.3, 2] (or None: fit the field of view), "
                                 f"got {self.patient_scale!r}")
        if self.arms_raised not in (None, True, False):
            raise InputError(f"arms_raised must be true, false or None (drawn from the seed), got {self.arms_raised!r}")
        radii = numbers(self.lesion_radius_mm, 2)
        if radii is None or not (0 < radii[0] <= radii[1]):
            raise InputError(
                f"lesion_radius_mm must be (min, max) with 0 < min <= max, got {self.lesion_radius_mm!r}"
            )


@dataclass(frozen=True)
class Phantom:
    image: sitk.Image  # HU, float32; volume centred at (0, 0, 0) mm, identity direction
    labels: sitk.Image  # uint8 anatomy labels (anatomy.ANATOMY_CLASSES indices), same grid
    lesion_mask: sitk.Image  # uint8 0/1, same grid (all zero without lesions)
    region: str
    contrast: str = "native"  # the phase rendered ("random" resolved)

