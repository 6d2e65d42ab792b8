"""Procedural CT phantoms (head-and-neck, chest, abdomen) with anatomy labels, lesions and a low-dose model.

What a phantom is
-----------------
One adult body model (head to pelvis) is described in *nominal* millimetres in the patient frame
(LPS, as in ITK and DICOM: +x towards the patient's left, +y posterior, +z superior; the patient lies
supine on a table, back down). A region picks a window along z of that body; the patient is scaled by
one factor ``s <= 1`` so that the region's whole body outline and its z range fit the requested field
of view (for clinical fields of view ``s`` is about 1, for small test volumes the patient shrinks).
Every shape is an implicit function evaluated at the physical voxel centres (through a smooth random
deformation), so a phantom sampled at another spacing over the same field of view has the same
anatomy; only the sampling, the partial-volume blur and the tissue texture differ.

Shapes are superellipsoids, superelliptic columns whose size varies along z, and tubes around smooth
paths (vessels, ribs, bowel, airways, branching lung and liver vessel trees). Each structure carries
a base HU value (non-contrast CT, see ``REFERENCE_HU_RANGES``) and a texture amplitude; the image is
base + amplitude x correlated noise, blurred by a small Gaussian point-spread function.

Labels use TotalSegmentator v2 class names (``anatomy.ANATOMY_CLASSES``); everything inside the body
that has no class of its own is 118 ("body"), outside the body (air, the table) is 0.

Contrast convention: **non-contrast** (unenhanced) CT throughout: blood ~ 40-45 HU (aorta, heart,
veins), kidneys ~ 30 HU, liver ~ 60 HU, spleen ~ 48 HU.

Randomness: ``numpy.random.default_rng`` only, seeded from ``PhantomConfig.seed`` (separate streams for
the anatomy, the texture and the lesions, so the anatomy does not depend on the grid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.interpolate import CubicSpline

from ..anatomy import ANATOMY_CLASSES, BODY_LABEL, label_index
from ..errors import InputError
from ..regions import REGIONS, check_region

__all__ = [
    "PhantomConfig",
    "Phantom",
    "make_phantom",
    "organ_mean_hu",
    "REFERENCE_HU_RANGES",
    "LESION_MODELS",
]


# ---------------------------------------------------------------------------------------------------
# Reference values
# ---------------------------------------------------------------------------------------------------

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
#   organs: label names of the host organ (lesions lie wholly inside their union when they fit);
#   mode "absolute": the lesion's HU is drawn from hu; mode "relative": organ HU + a draw from hu
#   (for head_neck a hyperdense or a hypodense range is chosen with equal probability);
#   irregularity: relative amplitude of the boundary's random bumps.
LESION_MODELS: dict[str, dict] = {
    "chest": {
        "organs": _LUNG_LOBES,
        "mode": "absolute",
        "hu": ((20.0, 60.0),),  # solid pulmonary nodules
        "texture": 8.0,
        "irregularity": 0.18,
    },
    "abdomen": {
        "organs": ("liver",),
        "mode": "relative",
        "hu": ((-60.0, -30.0),),  # hypodense liver lesions (metastases, cysts)
        "texture": 5.0,
        "irregularity": 0.10,
    },
    "head_neck": {
        "organs": ("brain",),
        "mode": "relative",
        "hu": ((25.0, 45.0), (-25.0, -12.0)),  # hyperdense (haemorrhage) or hypodense (oedema, infarct)
        "texture": 3.0,
        "irregularity": 0.12,
    },
}

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
}

_REGION_Z_RANGE = {  # nominal z window (mm) a region shows in full
    "head_neck": (272.0, 570.0),
    "chest": (-12.0, 285.0),
    "abdomen": (-215.0, 60.0),
}

# Vertebral levels: name, nominal centre z (mm), height including one disc (mm)
_LEVELS = [
    ("vertebrae_S1", -170.0, 30.0),
    ("vertebrae_L5", -139.0, 31.0),
    ("vertebrae_L4", -108.0, 31.0),
    ("vertebrae_L3", -77.0, 31.0),
    ("vertebrae_L2", -46.0, 31.0),
    ("vertebrae_L1", -16.0, 29.0),
    ("vertebrae_T12", 12.0, 27.0),
    ("vertebrae_T11", 38.0, 25.0),
    ("vertebrae_T10", 62.0, 24.0),
    ("vertebrae_T9", 85.5, 23.0),
    ("vertebrae_T8", 108.0, 22.0),
    ("vertebrae_T7", 130.0, 22.0),
    ("vertebrae_T6", 151.5, 21.0),
    ("vertebrae_T5", 172.0, 20.0),
    ("vertebrae_T4", 192.0, 20.0),
    ("vertebrae_T3", 212.0, 20.0),
    ("vertebrae_T2", 231.5, 19.0),
    ("vertebrae_T1", 250.5, 19.0),
    ("vertebrae_C7", 268.5, 17.0),
    ("vertebrae_C6", 285.0, 16.0),
    ("vertebrae_C5", 301.0, 16.0),
    ("vertebrae_C4", 317.0, 16.0),
    ("vertebrae_C3", 333.0, 16.0),
    ("vertebrae_C2", 352.0, 22.0),
    ("vertebrae_C1", 373.0, 20.0),
]

# Spine column along z: centre y of the vertebral bodies, body half-width/half-depth, canal radius,
# spinous and transverse process lengths (nominal mm).
_SPINE_Z = np.array([-330.0, -200.0, -120.0, -40.0, 20.0, 100.0, 180.0, 240.0, 275.0, 320.0, 390.0])
_SPINE_Y = np.array([66.0, 48.0, 40.0, 40.0, 44.0, 47.0, 45.0, 42.0, 44.0, 45.0, 46.0])
_SPINE_RX = np.array([25.0, 25.0, 24.0, 22.0, 19.0, 17.0, 16.0, 15.0, 12.0, 11.0, 10.0])
_SPINE_RY = np.array([17.0, 17.0, 17.0, 16.0, 15.0, 14.0, 13.0, 12.0, 9.0, 8.0, 8.0])
_SPINE_CANAL = np.array([7.0, 8.5, 9.0, 9.0, 8.0, 7.5, 7.5, 8.0, 8.5, 9.0, 10.0])
_SPINE_SP = np.array([18.0, 28.0, 30.0, 30.0, 32.0, 34.0, 32.0, 30.0, 24.0, 18.0, 10.0])
_SPINE_TP = np.array([30.0, 32.0, 36.0, 34.0, 28.0, 26.0, 26.0, 26.0, 20.0, 16.0, 16.0])

# Torso and neck outline without subcutaneous fat (the muscle wall's outer surface):
# z, half-width, half-depth, centre y (nominal mm). Above z = 412 the head and face ellipsoids take over.
_TORSO_Z = np.array([-330.0, -220.0, -140.0, -60.0, 20.0, 100.0, 180.0, 228.0, 252.0, 266.0, 278.0, 320.0, 392.0, 412.0])
_TORSO_A = np.array([158.0, 150.0, 140.0, 138.0, 146.0, 153.0, 153.0, 150.0, 118.0, 72.0, 52.0, 49.0, 50.0, 46.0])
_TORSO_B = np.array([100.0, 100.0, 102.0, 104.0, 106.0, 106.0, 103.0, 96.0, 80.0, 60.0, 50.0, 47.0, 48.0, 46.0])
_TORSO_Y = np.array([8.0, 8.0, 6.0, 4.0, 2.0, 2.0, 5.0, 11.0, 25.0, 38.0, 42.0, 42.0, 40.0, 40.0])

_HEAD_C = np.array([0.0, 17.0, 468.0])
_HEAD_SEMI = np.array([80.0, 98.0, 100.0])
_FACE_C = np.array([0.0, -15.0, 385.0])
_FACE_SEMI = np.array([62.0, 70.0, 52.0])


def _l(name: str) -> int:
    return label_index(name)


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

    def __post_init__(self):
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


# ---------------------------------------------------------------------------------------------------
# Small geometry helpers
# ---------------------------------------------------------------------------------------------------


def _unit(v):
    v = np.asarray(v, dtype=float)
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def _rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation matrix from angles in degrees about z (yaw), y (pitch) and x (roll)."""
    a, b, c = np.radians([yaw, pitch, roll])
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rx = np.array([[1, 0, 0], [0, math.cos(c), -math.sin(c)], [0, math.sin(c), math.cos(c)]])
    return rz @ ry @ rx


def _path(ctrl, radii, step: float = 4.0):
    """Points and radii along a smooth curve through control points (chord-length cubic spline)."""
    ctrl = np.asarray(ctrl, dtype=float)
    radii = np.broadcast_to(np.asarray(radii, dtype=float), (len(ctrl),))
    d = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(ctrl, axis=0), axis=1))]
    n = max(int(math.ceil(d[-1] / step)) + 1, 2)
    t = np.linspace(0.0, d[-1], n)
    if len(ctrl) >= 3:
        pts = CubicSpline(d, ctrl, bc_type="natural")(t)
    else:
        pts = np.stack([np.interp(t, d, ctrl[:, k]) for k in range(3)], axis=1)
    return pts, np.interp(t, d, radii)


class _Fourier:
    """A smooth random scalar field: sum of random plane cosines, unit variance, analytic in space."""

    def __init__(self, rng, n: int, wavelength: tuple[float, float]):
        dirs = rng.normal(size=(n, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        lam = rng.uniform(wavelength[0], wavelength[1], size=n)
        self.k = dirs * (2 * np.pi / lam)[:, None]
        self.phase = rng.uniform(0, 2 * np.pi, size=n)
        self.amp = math.sqrt(2.0 / n)

    def __call__(self, x, y, z):
        out = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)), dtype=np.float32)
        for (kx, ky, kz), ph in zip(self.k, self.phase):
            out += np.cos(np.float32(kx) * x + np.float32(ky) * y + np.float32(kz) * z + np.float32(ph))
        out *= np.float32(self.amp)
        return out


def _grow_tree(rng, start, direction, length, radius, depth, spread=(0.35, 0.65)):
    """Branching tube segments (p0, p1, r0, r1) of a vessel tree: two children per node."""
    segs = []
    stack = [(np.asarray(start, float), _unit(direction), float(length), float(radius), int(depth))]
    while stack:
        p, d, length_, r, k = stack.pop()
        d = _unit(d + rng.normal(0.0, 0.12, 3))
        q = p + d * length_
        segs.append((p, q, r, r * 0.85))
        if k > 0:
            perp = _unit(np.cross(d, rng.normal(size=3)))
            ang = rng.uniform(*spread)
            for sgn in (1.0, -1.0):
                child = _unit(d * math.cos(ang) + sgn * perp * math.sin(ang))
                stack.append((q, child, length_ * rng.uniform(0.72, 0.92), r * rng.uniform(0.68, 0.8), k - 1))
    return segs


# ---------------------------------------------------------------------------------------------------
# The canvas: grid, deformed nominal coordinates, label and HU volumes
# ---------------------------------------------------------------------------------------------------


_EMPTY_BOX = (slice(0, 0), slice(0, 0), slice(0, 0))
_EMPTY_FIELD = np.zeros((0, 0, 0), dtype=np.float32)


class _Canvas:
    def __init__(self, config: PhantomConfig, scale: float, centre, warp_fields, warp_amp: float):
        self.size = np.array(config.size, dtype=int)  # x, y, z
        self.spacing = np.array(config.spacing, dtype=float)
        self.origin = -(self.size - 1) / 2.0 * self.spacing
        self.shape = (int(self.size[2]), int(self.size[1]), int(self.size[0]))  # z, y, x
        self.s = float(scale)
        self.c = np.asarray(centre, dtype=float)
        self.margin = warp_amp  # nominal mm the deformation can move a point
        # nominal (undeformed) coordinate of each index along each axis
        self.axes = [
            ((self.origin[k] + np.arange(self.size[k]) * self.spacing[k]) / self.s + self.c[k]).astype(np.float32)
            for k in range(3)
        ]
        ux = self.axes[0][None, None, :]
        uy = self.axes[1][:, None][None, :, :]
        uz = self.axes[2][:, None, None]
        shape = self.shape
        self.X = np.broadcast_to(ux, shape).astype(np.float32)
        self.Y = np.broadcast_to(uy, shape).astype(np.float32)
        self.Z = np.broadcast_to(uz, shape).astype(np.float32)
        for arr, field in zip((self.X, self.Y, self.Z), warp_fields):
            arr += field(ux, uy, uz)
        self.lab = np.zeros(shape, dtype=np.uint8)
        self.hu = np.full(shape, -1000.0, dtype=np.float32)
        self.tex = np.zeros(shape, dtype=np.float32)
        self.voxel_nominal = float(self.spacing.min()) / self.s

    # index box of a nominal-coordinate box (with the deformation's margin), or None when outside
    def box(self, lo, hi):
        lo = np.asarray(lo, dtype=float) - self.margin
        hi = np.asarray(hi, dtype=float) + self.margin
        sl = []
        for k in range(3):
            i0 = ((lo[k] - self.c[k]) * self.s - self.origin[k]) / self.spacing[k]
            i1 = ((hi[k] - self.c[k]) * self.s - self.origin[k]) / self.spacing[k]
            a = max(int(math.floor(i0)) - 1, 0)
            b = min(int(math.ceil(i1)) + 2, int(self.size[k]))
            if a >= b:
                return None
            sl.append(slice(a, b))
        return (sl[2], sl[1], sl[0])

    def coords(self, sl):
        return self.X[sl], self.Y[sl], self.Z[sl]

    def put(self, sl, mask, label=None, hu=None, tex=None):
        if sl is None:
            return
        if label is not None:
            self.lab[sl][mask] = label
        for target, value in ((self.hu, hu), (self.tex, tex)):
            if value is None:
                continue
            if np.ndim(value) == 3:  # a value per voxel of the box
                target[sl][mask] = value[mask]
            else:  # a scalar, or values already picked by the mask
                target[sl][mask] = value

    def ellipsoid(self, centre, semi, rot=None, p=2.0):
        """(box, normalised radius) of a superellipsoid; radius < 1 inside."""
        centre = np.asarray(centre, dtype=float)
        semi = np.asarray(semi, dtype=float)
        ext = float(semi.max()) if rot is not None else semi
        sl = self.box(centre - ext, centre + ext)
        if sl is None:
            return _EMPTY_BOX, _EMPTY_FIELD
        X, Y, Z = self.coords(sl)
        dx, dy, dz = X - np.float32(centre[0]), Y - np.float32(centre[1]), Z - np.float32(centre[2])
        if rot is not None:
            r = np.asarray(rot, dtype=np.float32)
            dx, dy, dz = (
                r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
                r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
                r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz,
            )
        if p == 2.0:
            rho = (dx / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dz / semi[2]) ** 2
            return sl, np.sqrt(rho)
        rho = np.abs(dx / semi[0]) ** p + np.abs(dy / semi[1]) ** p + np.abs(dz / semi[2]) ** p
        return sl, rho ** (1.0 / p)

    def column(self, zk, cx, cy, a, b, p=2.0, zlim=None):
        """(box, normalised radius) of a superelliptic column whose section varies along z."""
        zk = np.asarray(zk, float)
        cx, cy, a, b = (np.broadcast_to(np.asarray(v, float), zk.shape) for v in (cx, cy, a, b))
        z0, z1 = zlim if zlim is not None else (zk[0], zk[-1])
        lo = (float((cx - a).min()), float((cy - b).min()), z0)
        hi = (float((cx + a).max()), float((cy + b).max()), z1)
        sl = self.box(lo, hi)
        if sl is None:
            return _EMPTY_BOX, _EMPTY_FIELD
        X, Y, Z = self.coords(sl)
        zc = np.clip(Z, zk[0], zk[-1])
        dx = np.abs(X - np.interp(zc, zk, cx).astype(np.float32)) / np.interp(zc, zk, a).astype(np.float32)
        dy = np.abs(Y - np.interp(zc, zk, cy).astype(np.float32)) / np.interp(zc, zk, b).astype(np.float32)
        rho = (dx**p + dy**p) ** (1.0 / p)
        rho[(Z < z0) | (Z > z1)] = np.inf
        return sl, rho

    def tube(self, pts, radii):
        """(box, normalised distance d / r) to a tube along a polyline; < 1 inside."""
        pts = np.asarray(pts, dtype=float)
        radii = np.broadcast_to(np.asarray(radii, dtype=float), (len(pts),))
        rmax = float(radii.max())
        blk = self.box(pts.min(axis=0) - rmax, pts.max(axis=0) + rmax)
        if blk is None:
            return _EMPTY_BOX, _EMPTY_FIELD
        nd = np.full(tuple(s.stop - s.start for s in blk), np.inf, dtype=np.float32)
        for i in range(len(pts) - 1):
            self._segment(blk, nd, pts[i], pts[i + 1], radii[i], radii[i + 1])
        return blk, nd

    def _segment(self, blk, nd, a, b, ra, rb, soft=None):
        r = max(ra, rb)
        sl = self.box(np.minimum(a, b) - r, np.maximum(a, b) + r)
        if sl is None:
            return
        sl = tuple(slice(max(s.start, B.start), min(s.stop, B.stop)) for s, B in zip(sl, blk))
        if any(s.start >= s.stop for s in sl):
            return
        local = tuple(slice(s.start - B.start, s.stop - B.start) for s, B in zip(sl, blk))
        X, Y, Z = self.coords(sl)
        ab = (b - a).astype(np.float32)
        L2 = float(ab @ ab) or 1e-6
        px, py, pz = X - np.float32(a[0]), Y - np.float32(a[1]), Z - np.float32(a[2])
        t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / np.float32(L2), 0.0, 1.0)
        d = np.sqrt((px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (pz - t * ab[2]) ** 2)
        rr = np.float32(ra) + t * np.float32(rb - ra)
        if soft is None:
            np.minimum(nd[local], d / rr, out=nd[local])
        else:  # anti-aliased fill fraction; thin vessels keep their cross-section area
            reff = np.maximum(rr, np.float32(soft))
            w = np.minimum((rr / reff) ** 2, 1.0)
            frac = np.clip((reff - d) / np.float32(soft) + 0.5, 0.0, 1.0) * w
            np.maximum(nd[local], frac, out=nd[local])

    def soft_tree(self, segs):
        """(box, fill fraction in [0, 1]) of a vessel tree, anti-aliased at the voxel size."""
        if not segs:
            return _EMPTY_BOX, _EMPTY_FIELD
        p = np.array([s[0] for s in segs] + [s[1] for s in segs])
        rmax = max(s[2] for s in segs)
        blk = self.box(p.min(axis=0) - rmax, p.max(axis=0) + rmax)
        if blk is None:
            return _EMPTY_BOX, _EMPTY_FIELD
        frac = np.zeros(tuple(s.stop - s.start for s in blk), dtype=np.float32)
        soft = 0.6 * self.voxel_nominal
        for a, b, ra, rb in segs:
            self._segment(blk, frac, a, b, ra, rb, soft=soft)
        return blk, frac


# ---------------------------------------------------------------------------------------------------
# The body model
# ---------------------------------------------------------------------------------------------------


class _Body:
    """Draws every random anatomical parameter up front (grid-independent), then paints on a canvas."""

    def __init__(self, rng):
        self.rng = rng
        u = rng.uniform
        # tissue values for this patient
        self.t = {k: (m + (rng.normal(0.0, sd) if sd else 0.0), tx) for k, (m, sd, tx) in _T.items()}
        # habitus
        self.width = u(0.95, 1.06)
        self.depth = u(0.94, 1.06)
        self.fat = u(8.0, 28.0)
        self.neck_fat = 4.0 + 0.25 * self.fat
        self.wall = u(11.0, 16.0)
        self.head = u(0.95, 1.05)
        # smooth deformation of the whole body (nominal mm) and boundary roughness
        self.warp = [_Fourier(rng, 3, (260.0, 520.0)) for _ in range(3)]
        self.warp_amp = [u(2.0, 4.0) for _ in range(3)]
        self.shape_noise = _Fourier(rng, 12, (35.0, 80.0))
        self.fine_noise = _Fourier(rng, 16, (10.0, 22.0))
        # diaphragm and lung fissures
        self.dome_r = 45.0 + u(-8, 8)
        self.dome_l = self.dome_r - u(5, 15)
        self.fiss_l = 118.0 + u(-12, 12)
        self.fiss_r = 108.0 + u(-12, 12)
        self.fiss_h = 140.0 + u(-10, 10)

        def jit(c, sd=4.0):
            return np.asarray(c, float) + rng.normal(0.0, sd, 3)

        def sz(semi, lo=0.9, hi=1.1):
            return np.asarray(semi, float) * u(lo, hi, 3)

        # organs (centres, semi-axes, angles)
        self.heart = (jit((18.0, -18.0, 92.0), 5), sz((70.0, 47.0, 55.0), 0.92, 1.08), u(30, 45), u(-25, -10))
        self.liver_r = (jit((-62.0, 8.0, -12.0), 5), sz((74.0, 84.0, 70.0), 0.92, 1.08))
        self.liver_l = (jit((12.0, -45.0, 14.0), 5), sz((58.0, 36.0, 34.0)))
        self.spleen = (jit((88.0, 55.0, 0.0), 5), sz((24.0, 52.0, 44.0)), u(30, 50))
        self.kidneys = [
            (side, jit((side * 66.0, 52.0, (-52.0 if side > 0 else -66.0)), 4), sz((26.0, 22.0, 54.0)), u(20, 35))
            for side in (1.0, -1.0)
        ]
        self.adrenals = [(side, jit((side * 36.0, 38.0, -6.0 if side > 0 else 2.0), 2)) for side in (1.0, -1.0)]
        self.gallbladder = (jit((-45.0, -52.0, -52.0), 4), sz((15.0, 15.0, 34.0)), u(-30, -10))
        self.stomach_ctrl = np.array(
            [(52, 12, 30), (70, -18, -8), (58, -48, -40), (20, -62, -55), (-12, -46, -50)], float
        ) + rng.normal(0.0, 4.0, (5, 3))
        self.stomach_r = np.array([40, 36, 30, 22, 12], float) * u(0.85, 1.1)
        self.stomach_air = u(-45.0, -25.0)  # gas collects anteriorly (supine), in front of this y
        self.small_bowel = self._random_walk()
        self.colon_ctrl = np.array(
            [(-72, -5, -185), (-80, 12, -125), (-76, -18, -72), (-35, -64, -88), (30, -66, -82), (82, 8, -30),
             (86, 30, -100), (80, 24, -170), (40, -8, -212), (0, 12, -238)], float
        ) + rng.normal(0.0, 4.0, (10, 3))
        self.colon_r = np.array([24, 21, 20, 19, 19, 18, 16, 16, 15, 15], float) * u(0.9, 1.1)
        self.colon_gas = [(u(0.0, 1.0), u(0.4, 0.8)) for _ in range(9)]  # (position along, size)
        self.bowel_gas = [(u(0.0, 1.0), u(0.3, 0.6)) for _ in range(5)]
        self.bladder = (jit((0.0, -20.0, -268.0), 4), sz((45.0, 35.0, 35.0)))
        # trees (nominal): lung vessels per lobe root, liver vessels
        self.lung_trees = []
        for side in (1.0, -1.0):
            hilum = np.array([side * 48.0, 18.0, 150.0]) + rng.normal(0.0, 3.0, 3)
            roots = [(side * 0.4, 0.3, 1.0), (side * 0.6, -0.7, 0.5), (side * 0.5, 0.8, -0.5),
                     (side * 0.7, 0.1, -0.9), (side * 0.8, -0.6, -0.4)]
            if side < 0:
                roots.append((side * 0.7, -0.9, -0.1))
            for d in roots:
                self.lung_trees += _grow_tree(rng, hilum, d, u(30.0, 38.0), u(4.5, 6.0), 6)
        self.liver_tree = _grow_tree(rng, (-40.0, 2.0, -22.0), (-0.7, 0.1, 0.5), 30.0, 4.5, 4) + _grow_tree(
            rng, (-40.0, 2.0, -22.0), (-0.4, -0.6, -0.4), 28.0, 4.0, 3
        )
        self.brain_fold = _Fourier(rng, 16, (14.0, 28.0))
        self.brain_sulci = _Fourier(rng, 16, (8.0, 14.0))
        self.head_jit = rng.normal(0.0, 2.0, 3)
        self.lung_labels = np.array([_l(n) for n in _LUNG_LOBES], dtype=np.uint8)

    def _random_walk(self):
        rng = self.rng
        lo, hi = np.array([-55.0, -70.0, -200.0]), np.array([55.0, 5.0, -92.0])
        p = rng.uniform(lo, hi)
        d = _unit(rng.normal(size=3))
        pts = [p]
        for _ in range(44):
            d = _unit(d + rng.normal(0.0, 0.6, 3))
            q = pts[-1] + d * 16.0
            for k in range(3):  # reflect at the box walls
                if q[k] < lo[k] or q[k] > hi[k]:
                    d[k] = -d[k]
                    q[k] = np.clip(q[k], lo[k], hi[k])
            pts.append(q)
        return np.array(pts)

    # ---- outline functions (nominal) ----
    def torso(self, z):
        """Muscle-wall outer surface (no fat): half-width, half-depth, centre y at height z."""
        a = np.interp(z, _TORSO_Z, _TORSO_A) * self.width
        b = np.interp(z, _TORSO_Z, _TORSO_B) * self.depth
        yc = np.interp(z, _TORSO_Z, _TORSO_Y) + np.interp(z, _TORSO_Z, _TORSO_B) * (1 - self.depth)
        return a, b, yc

    def fat_at(self, z):
        return np.interp(z, [250.0, 272.0], [self.fat, self.neck_fat])

    def spine(self, z):
        return (np.interp(z, _SPINE_Z, v) for v in (_SPINE_Y, _SPINE_RX, _SPINE_RY, _SPINE_CANAL, _SPINE_SP, _SPINE_TP))

    def diaphragm(self, x, y):
        dome = self.dome_l + (self.dome_r - self.dome_l) * 0.5 * (1 - np.tanh(x / 25.0))
        rho2 = np.minimum(((np.abs(x) - 58.0) / 95.0) ** 2 + ((y - 10.0) / 100.0) ** 2, 1.6)
        return dome - 45.0 * rho2

    def extent(self, region):
        """Nominal half-width and (front, back) y of the body within a region's z range."""
        z0, z1 = _REGION_Z_RANGE[region]
        z = np.linspace(z0, min(z1, 412.0), 60)
        a, b, yc = self.torso(z)
        f = self.fat_at(z)
        half_w = float((a + f).max())
        front = float((yc - b - f).min())
        back = float((yc + b + f).max())
        if z1 > 330.0:  # head and face
            hs = _HEAD_SEMI * self.head
            half_w = max(half_w, hs[0])
            front = min(front, _HEAD_C[1] - hs[1], _FACE_C[1] - _FACE_SEMI[1])
            back = max(back, _HEAD_C[1] + hs[1])
        return half_w, front, back

    # ---- painting ----
    def paint(self, cv: _Canvas):
        self._outline(cv)
        self._thorax_abdomen_cavity(cv)
        self._spine(cv)
        self._mediastinum(cv)
        self._lung_trees(cv)
        self._abdomen(cv)
        self._great_vessels(cv)
        self._chest_wall_bones(cv)
        self._pelvis(cv)
        self._neck(cv)
        self._head(cv)

    def _fill(self, cv, sl, mask, label, tissue):
        hu, tx = self.t[tissue]
        cv.put(sl, mask, label=label, hu=hu, tex=tx)

    def _outline(self, cv):
        zk = _TORSO_Z
        a, b, yc = self.torso(zk)
        f = self.fat_at(zk)
        noise = 0.012
        # Each part is a fat shell around a soft-tissue core; a part's fat only goes where no other part
        # is yet, its core goes everywhere, so overlapping parts show no fat seams inside the body.
        hs = _HEAD_SEMI * self.head
        hc = _HEAD_C + self.head_jit
        sl, rho = cv.ellipsoid(hc, hs)
        self._fill(cv, sl, rho < 1.0, BODY_LABEL, "fat")
        self._fill(cv, sl, rho < 0.96, BODY_LABEL, "scalp")
        sl, rho = cv.ellipsoid(_FACE_C + self.head_jit, _FACE_SEMI * self.head)
        self._fill(cv, sl, (rho < 1.0) & (cv.lab[sl] == 0), BODY_LABEL, "fat")
        self._fill(cv, sl, rho < 0.9, BODY_LABEL, "muscle")
        sl, rho = cv.column(zk, 0.0, yc, a + f, b + f, p=2.4, zlim=(-400.0, 412.0))
        X, Y, Z = cv.coords(sl)
        inside = rho < 1.0 + noise * self.shape_noise(X, Y, Z)
        self._fill(cv, sl, inside & (cv.lab[sl] == 0), BODY_LABEL, "fat")
        sl2, rho2 = cv.column(zk, 0.0, yc, a, b, p=2.4, zlim=(-400.0, 412.0))
        self._fill(cv, sl2, rho2 < 1.0 + noise * self.shape_noise(*cv.coords(sl2)), BODY_LABEL, "muscle")
        self.body_mask = cv.lab == BODY_LABEL

    def _cavity(self, z):
        """Thoracic/abdominal cavity inside the muscle wall; the back wall is 20 mm thicker."""
        a, b, yc = self.torso(z)
        a_c = a - self.wall
        b_c = b - self.wall - 10.0
        yc = yc - 10.0
        taper = np.sqrt(np.clip(1.0 - ((np.asarray(z) - 215.0) / (266.0 - 215.0)) ** 2, 0.0, 1.0))
        taper = np.where(np.asarray(z) < 215.0, 1.0, taper)
        return a_c * np.maximum(taper, 1e-3), b_c * np.maximum(taper, 1e-3), yc

    def _thorax_abdomen_cavity(self, cv):
        zk = np.linspace(-330.0, 266.0, 60)
        a, b, yc = self._cavity(zk)
        sl, rho = cv.column(zk, 0.0, yc, a, b, p=2.2, zlim=(-330.0, 266.0))
        if sl is None:
            return
        X, Y, Z = cv.coords(sl)
        inside = rho < 1.0 + 0.01 * self.shape_noise(X, Y, Z)
        zd = self.diaphragm(X, Y)
        below = Z < zd - 5.0
        self._fill(cv, sl, inside & below, BODY_LABEL, "fat")
        self._fill(cv, sl, inside & ~below & (Z < zd), BODY_LABEL, "muscle")  # the diaphragm
        lung = inside & (Z >= zd)
        left = X > 6.0
        lower_l = Z < self.fiss_l + 0.9 * Y
        lower_r = Z < self.fiss_r + 0.9 * Y
        lab = np.where(
            left,
            np.where(lower_l, _l("lung_lower_lobe_left"), _l("lung_upper_lobe_left")),
            np.where(
                lower_r,
                _l("lung_lower_lobe_right"),
                np.where(Z < self.fiss_h, _l("lung_middle_lobe_right"), _l("lung_upper_lobe_right")),
            ),
        ).astype(np.uint8)
        hu0, tx = self.t["lung"]
        # dependent (posterior) lung is denser
        _, bz, yz = self._cavity(np.clip(Z, -330, 266))
        grad = np.clip((Y - yz) / np.maximum(bz, 1.0), -1.0, 1.0)
        hu = (hu0 + 45.0 * grad).astype(np.float32)
        cv.put(sl, lung, label=lab[lung], hu=hu, tex=tx)

    def _spine(self, cv):
        z0, z1 = -330.0, 412.0
        lo = (-60.0, 10.0, z0)
        hi = (60.0, 125.0, z1)
        sl = cv.box(lo, hi)
        if sl is None:
            return
        X, Y, Z = cv.coords(sl)
        yv, rx, ry, rc, sp, tp = self.spine(Z)
        yv = yv.astype(np.float32)
        inside_body = self.body_mask[sl]
        # posterior block: paraspinal muscles, and the spine is kept out of the lungs
        blk_c = yv + 40.0
        rho_blk = (np.abs(X) / 36.0) ** 3 + (np.abs(Y - blk_c) / 48.0) ** 3
        blk = (rho_blk < 1.0) & inside_body & (Z < 290.0)
        self._fill(cv, sl, blk, BODY_LABEL, "muscle")
        # autochthon (erector spinae) muscles either side of the spinous processes
        y_canal = yv + ry + rc + 1.5
        for side, name in ((1.0, "autochthon_left"), (-1.0, "autochthon_right")):
            rho = (np.abs(X - side * 26.0) / 20.0) ** 2 + (np.abs(Y - (y_canal + 30.0)) / 22.0) ** 2
            m = (rho < 1.0) & inside_body & (Z < 300.0) & (Z > -230.0)
            self._fill(cv, sl, m, _l(name), "muscle")
        # levels
        names = [n for n, _, _ in _LEVELS]
        zc = np.array([c for _, c, _ in _LEVELS])
        h = np.array([hh for _, _, hh in _LEVELS])
        bounds = np.r_[zc[0] - h[0] / 2, zc + h / 2]  # bounds[i] .. bounds[i+1] is level i
        idx = np.clip(np.searchsorted(bounds, Z) - 1, 0, len(zc) - 1)
        zrel = Z - zc[idx]
        hh = h[idx] / 2.0
        disc = 0.22 * h[idx]  # disc height (half below, half above each vertebral body)
        in_range = (Z > bounds[0]) & (Z < bounds[-1])
        labels = np.array([_l(n) for n in names], dtype=np.uint8)[idx]
        is_c1 = idx == names.index("vertebrae_C1")
        # vertebral bodies (C1 has none)
        rho_b = ((np.abs(X) / rx) ** 2.2 + (np.abs(Y - yv) / ry) ** 2.2) ** (1 / 2.2)
        body = (rho_b < 1.0) & (np.abs(zrel) < hh - disc / 2) & in_range & ~is_c1
        discs = (rho_b < 0.95) & (np.abs(zrel) >= hh - disc / 2) & in_range & ~is_c1
        self._fill(cv, sl, discs, BODY_LABEL, "disc")
        cortex = body & ((rho_b > 1.0 - 1.6 / ry) | (np.abs(zrel) > hh - disc / 2 - 1.3))
        hc = self.t["cortical"][0]
        hm, tm = self.t["cancellous"]
        cv.put(sl, body, label=labels[body], hu=np.where(cortex, hc, hm).astype(np.float32)[body], tex=tm)
        # posterior elements: arch around the canal, spinous and transverse processes
        r_canal = np.sqrt(X**2 + (Y - y_canal) ** 2)
        arch_z = np.abs(zrel) < hh - disc / 2 - 0.5
        arch = (r_canal >= rc) & (r_canal < rc + 5.5) & (Y > yv) & arch_z & in_range
        ys = Y - (y_canal + rc)
        tilt = np.where(Z > 0, 0.35, 0.1)  # thoracic spinous processes point downwards
        spin = (np.abs(X) < 4.0) & (ys > 0) & (ys < sp) & (np.abs(zrel + tilt * ys) < 0.28 * h[idx]) & in_range
        trans = (np.abs(Y - y_canal) < 5.5) & (np.abs(X) > rc) & (np.abs(X) < rc + tp) & (np.abs(zrel) < 0.22 * h[idx])
        trans &= in_range
        post = (arch | spin | trans) & inside_body
        hp = np.where(r_canal < rc + 2.0, hc, 0.5 * (hc + hm)).astype(np.float32)
        cv.put(sl, post, label=labels[post], hu=hp[post], tex=tm)
        # canal: CSF and the cord (the cord ends at L1, the brain stem continues above C1)
        canal = (r_canal < rc) & (Z > -200.0) & (Z < 400.0)
        self._fill(cv, sl, canal, BODY_LABEL, "csf")
        cord = (r_canal < 0.6 * rc) & (Z > -20.0) & (Z < 392.0)
        self._fill(cv, sl, cord, _l("spinal_cord"), "cord")

    def _mediastinum(self, cv):
        zk = np.array([40.0, 110.0, 150.0, 200.0, 240.0, 266.0])
        w = np.array([30.0, 30.0, 30.0, 26.0, 22.0, 18.0])
        _, b_c, yc = self._cavity(zk)
        front = yc - b_c
        yv = np.interp(zk, _SPINE_Z, _SPINE_Y) - np.interp(zk, _SPINE_Z, _SPINE_RY)
        sl, rho = cv.column(zk, 5.0, (front + yv) / 2 + 3, w, (yv - front) / 2 + 6, p=3.0, zlim=(20.0, 266.0))
        if sl is not None:
            X, Y, Z = cv.coords(sl)
            m = (rho < 1.0) & (Z > self.diaphragm(X, Y) - 2) & self.body_mask[sl]
            self._fill(cv, sl, m, BODY_LABEL, "fat")
        # heart with pericardial fat, blood pool
        c, semi, yaw, pitch = self.heart
        rot = _rotation(yaw, pitch, 0.0)
        sl, rho = cv.ellipsoid(c, semi + 5.0, rot)
        if sl is not None:
            X, Y, Z = cv.coords(sl)
            above = Z > self.diaphragm(X, Y) - 3.0
            self._fill(cv, sl, (rho < 1.0) & above, BODY_LABEL, "fat")
            sl, rho = cv.ellipsoid(c, semi, rot)
            X, Y, Z = cv.coords(sl)
            above = Z > self.diaphragm(X, Y) - 1.0
            heart = (rho < 1.0 + 0.02 * self.shape_noise(X, Y, Z)) & above
            self._fill(cv, sl, heart, _l("heart"), "myocardium")
            self._fill(cv, sl, heart & (rho < 0.72), _l("heart"), "blood")
        # trachea, carina and main bronchi; esophagus
        zt = np.array([180.0, 230.0, 275.0, 305.0])
        yt = np.interp(zt, _SPINE_Z, _SPINE_Y) - np.interp(zt, _SPINE_Z, _SPINE_RY) - 24.0
        trachea = np.c_[np.zeros(4), yt, zt]
        carina = trachea[0]
        self._airway(cv, trachea, 9.0, _l("trachea"))
        for side in (1.0, -1.0):
            end = np.array([side * 46.0, 16.0, 150.0])
            pts = np.array([carina, carina + (end - carina) * 0.5 + (0, 0, 4), end])
            self._airway(cv, pts, 6.5 if side > 0 else 7.5, _l("trachea"), keep=self.lung_labels)
        ze = np.array([20.0, 60.0, 120.0, 200.0, 270.0, 300.0])
        ye = np.interp(ze, _SPINE_Z, _SPINE_Y) - np.interp(ze, _SPINE_Z, _SPINE_RY) - 8.0
        xe = np.array([28.0, 14.0, 6.0, 3.0, 2.0, 2.0])
        pts, r = _path(np.c_[xe, ye, ze], np.array([8, 8, 8, 8, 7, 7.0]))
        blk, nd = cv.tube(pts, r + 3.0)
        self._fill(cv, blk, nd < 1.0, BODY_LABEL, "fat")
        blk, nd = cv.tube(pts, r)
        self._fill(cv, blk, nd < 1.0, _l("esophagus"), "gi_wall")  # collapsed, no gas

    def _airway(self, cv, ctrl, radius, label, keep=None):
        pts, r = _path(ctrl, radius, step=3.0)
        blk, nd = cv.tube(pts, r + 2.0)
        if blk is None:
            return
        wall = nd < 1.0
        if keep is not None:  # inside the lungs the airway keeps the lobe's label
            inlung = np.isin(cv.lab[blk], keep)
            cv.put(blk, wall & ~inlung, label=label)
            cv.put(blk, wall, hu=self.t["trachea_wall"][0], tex=self.t["trachea_wall"][1])
        else:
            self._fill(cv, blk, wall, label, "trachea_wall")
        lumen = nd < (radius / (radius + 2.0))
        cv.put(blk, lumen, hu=-1000.0, tex=self.t["air"][1])

    def _lung_trees(self, cv):
        blk, frac = cv.soft_tree(self.lung_trees)
        if blk is None:
            return
        inlung = np.isin(cv.lab[blk], self.lung_labels) & (cv.hu[blk] > -990.0)
        frac = frac * inlung
        hb = self.t["blood"][0]
        h = cv.hu[blk]
        h += frac * (hb - h)
        t = cv.tex[blk]
        t += frac * (self.t["blood"][1] - t)

    def _abdomen(self, cv):
        fill = self._fill
        cav_sl = cv.box((-170.0, -120.0, -330.0), (170.0, 125.0, 90.0))
        if cav_sl is None:
            return

        def below_diaphragm(sl, margin=3.0):
            X, Y, Z = cv.coords(sl)
            return Z < self.diaphragm(X, Y) - margin

        def in_cavity(sl):
            X, Y, Z = cv.coords(sl)
            a, b, yc = self._cavity(np.clip(Z, -330, 266))
            rho = (np.abs(X) / a) ** 2.2 + (np.abs(Y - yc) / b) ** 2.2
            return rho < 1.0

        def organ(sl, rho, noise=0.04):
            X, Y, Z = cv.coords(sl)
            return (rho < 1.0 + noise * self.shape_noise(X, Y, Z)) & below_diaphragm(sl) & in_cavity(sl)

        # liver: right lobe + left lobe, vessels inside
        sl1, r1 = cv.ellipsoid(self.liver_r[0], self.liver_r[1], _rotation(-10, 0, 0), p=2.2)
        if sl1 is not None:
            fill(cv, sl1, organ(sl1, r1), _l("liver"), "liver")
        sl2, r2 = cv.ellipsoid(self.liver_l[0], self.liver_l[1], _rotation(-15, 10, 0))
        if sl2 is not None:
            fill(cv, sl2, organ(sl2, r2), _l("liver"), "liver")
        blk, frac = cv.soft_tree(self.liver_tree)
        if blk is not None:
            frac = frac * (cv.lab[blk] == _l("liver"))
            h = cv.hu[blk]
            h += frac * (self.t["blood"][0] - h)
        # IVC through the liver to the right atrium
        ivc = np.array([(-18.0, -2.0, 45.0), (-22.0, 12.0, 0.0), (-24.0, 18.0, -60.0), (-22.0, 16.0, -120.0)])
        pts, r = _path(ivc, np.array([12.0, 12.0, 11.0, 11.0]))
        blk, nd = cv.tube(pts, r)
        fill(cv, blk, nd < 1.0, _l("inferior_vena_cava"), "blood")
        for side, name in ((1.0, "iliac_vena_left"), (-1.0, "iliac_vena_right")):
            pts, r = _path([(-22.0, 16.0, -120.0), (side * 25.0, 24.0, -150.0), (side * 48.0, 30.0, -200.0)], 8.5)
            blk, nd = cv.tube(pts, r)
            fill(cv, blk, nd < 1.0, _l(name), "blood")
        # gallbladder
        c, semi, pitch = self.gallbladder
        sl, rho = cv.ellipsoid(c, semi, _rotation(0, 0, pitch))
        if sl is not None:
            fill(cv, sl, organ(sl, rho, 0.02), _l("gallbladder"), "gallbladder")
        # spleen
        c, semi, yaw = self.spleen
        sl, rho = cv.ellipsoid(c, semi, _rotation(yaw, 0, 0))
        if sl is not None:
            fill(cv, sl, organ(sl, rho), _l("spleen"), "spleen")
        # kidneys with sinus fat; adrenals
        for side, c, semi, yaw in self.kidneys:
            name = "kidney_left" if side > 0 else "kidney_right"
            rot = _rotation(-side * yaw, side * 12.0, 0)
            sl, rho = cv.ellipsoid(c, semi, rot)
            if sl is None:
                continue
            fill(cv, sl, organ(sl, rho, 0.02), _l(name), "kidney")
            hil = c + np.array([-side * 14.0, -8.0, 0.0])
            sl2, rho2 = cv.ellipsoid(hil, (9.0, 7.0, 22.0), rot)
            fill(cv, sl2, (rho2 < 1.0) & (cv.lab[sl2] == _l(name)), BODY_LABEL, "fat")
        for side, c in self.adrenals:
            name = "adrenal_gland_left" if side > 0 else "adrenal_gland_right"
            sl, rho = cv.ellipsoid(c, (4.0, 13.0, 15.0), _rotation(side * 30.0, 0, 0))
            if sl is not None:
                fill(cv, sl, organ(sl, rho, 0.0), _l(name), "adrenal")
        # stomach with fluid and a gas cap anteriorly; duodenum; pancreas; splenic/portal vein
        pts, r = _path(self.stomach_ctrl, self.stomach_r)
        self._hollow(cv, pts, r, _l("stomach"), "fluid", gas_y=self.stomach_air, wall=4.0, gate=organ)
        duo = np.array([self.stomach_ctrl[-1], (-38.0, -22.0, -56.0), (-46.0, 2.0, -84.0), (-12.0, 12.0, -104.0),
                        (24.0, 6.0, -96.0), (36.0, -12.0, -80.0)])
        pts, r = _path(duo, 12.0)
        self._hollow(cv, pts, r, _l("duodenum"), "fluid", wall=2.5, gate=organ)
        panc = np.array([(-34.0, -4.0, -78.0), (-4.0, -20.0, -60.0), (40.0, 2.0, -48.0), (78.0, 34.0, -34.0)])
        pts, r = _path(panc, np.array([15.0, 12.0, 11.0, 9.0]))
        blk, nd = cv.tube(pts, r)
        if blk is not None:
            fill(cv, blk, organ(blk, nd, 0.06), _l("pancreas"), "pancreas")
        spl = np.array([(74.0, 44.0, -28.0), (40.0, 16.0, -52.0), (2.0, -4.0, -62.0), (-30.0, 4.0, -36.0),
                        (-48.0, 6.0, -18.0)])
        pts, r = _path(spl, np.array([4.5, 5.0, 6.5, 7.0, 6.0]))
        blk, nd = cv.tube(pts, r)
        fill(cv, blk, nd < 1.0, _l("portal_vein_and_splenic_vein"), "blood")
        # small bowel, colon (gas pockets, stool), urinary bladder
        pts, r = _path(self.small_bowel, 11.0)
        self._hollow(cv, pts, r, _l("small_bowel"), "fluid", wall=2.5, gate=organ, gas=self.bowel_gas)
        pts, r = _path(self.colon_ctrl, self.colon_r)
        self._hollow(cv, pts, r, _l("colon"), "stool", wall=2.5, gate=organ, gas=self.colon_gas)
        c, semi = self.bladder
        sl, rho = cv.ellipsoid(c, semi)
        if sl is not None:
            fill(cv, sl, organ(sl, rho, 0.02), _l("urinary_bladder"), "bladder")
        # psoas muscles
        for side, name in ((1.0, "iliopsoas_left"), (-1.0, "iliopsoas_right")):
            ctrl = [(side * 24.0, 40.0, 5.0), (side * 38.0, 34.0, -80.0), (side * 58.0, 26.0, -180.0),
                    (side * 74.0, 6.0, -270.0)]
            pts, r = _path(ctrl, np.array([7.0, 15.0, 20.0, 18.0]))
            blk, nd = cv.tube(pts, r)
            if blk is not None:
                fill(cv, blk, (nd < 1.0) & below_diaphragm(blk, 0.0) & in_cavity(blk), _l(name), "muscle")

    def _hollow(self, cv, pts, r, label, content, wall, gate, gas_y=None, gas=()):
        """A hollow viscus: wall, content, gas where non-dependent (anterior)."""
        blk, nd = cv.tube(pts, r)
        if blk is None:
            return
        m = gate(blk, nd, 0.0)
        self._fill(cv, blk, m, label, "gi_wall")
        X, Y, Z = cv.coords(blk)
        lumen = m & (nd < 1.0 - wall / r.max())
        self._fill(cv, blk, lumen, label, content)
        if gas_y is not None:
            cv.put(blk, lumen & (Y < gas_y), hu=-1000.0, tex=self.t["air"][1])
        n = len(pts)
        for where, size in gas:
            i = min(int(where * (n - 1)), n - 1)
            c = pts[i] + np.array([0.0, -0.45 * r[i], 0.0])  # gas rises anteriorly (supine)
            d2 = (X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2
            cv.put(blk, lumen & (d2 < (size * r[i]) ** 2), hu=-1000.0, tex=self.t["air"][1])

    def _vessel(self, cv, ctrl, radii, label, halo=3.0):
        pts, r = _path(ctrl, radii)
        if halo:
            blk, nd = cv.tube(pts, r + halo)
            if blk is not None:  # a fat sheath, only where the tissue has no organ label of its own
                m = (nd < 1.0) & np.isin(cv.lab[blk], self._soft_labels)
                self._fill(cv, blk, m, BODY_LABEL, "fat")
        blk, nd = cv.tube(pts, r)
        if blk is not None:
            self._fill(cv, blk, (nd < 1.0) & self.body_mask[blk], label, "blood")

    @property
    def _soft_labels(self):
        return np.r_[self.lung_labels, BODY_LABEL].astype(np.uint8)

    def _great_vessels(self, cv):
        def yfront(z):  # just in front of the vertebral bodies
            return float(np.interp(z, _SPINE_Z, _SPINE_Y) - np.interp(z, _SPINE_Z, _SPINE_RY))

        hc = self.heart[0]
        aorta = [
            (hc[0] - 8.0, hc[1] - 5.0, hc[2] + 25.0),
            (4.0, -22.0, 172.0),
            (10.0, -8.0, 198.0),
            (22.0, yfront(185.0) - 6.0, 186.0),
            (24.0, yfront(140.0) - 8.0, 140.0),
            (18.0, yfront(60.0) - 10.0, 60.0),
            (10.0, yfront(-20.0) - 11.0, -20.0),
            (6.0, yfront(-110.0) - 10.0, -112.0),
        ]
        self._vessel(cv, aorta, np.array([15.0, 15.0, 13.0, 12.0, 11.5, 11.0, 10.0, 9.0]), _l("aorta"))
        for side, name in ((1.0, "iliac_artery_left"), (-1.0, "iliac_artery_right")):
            self._vessel(cv, [(6.0, yfront(-110.0) - 10.0, -112.0), (side * 24.0, 20.0, -150.0),
                              (side * 46.0, 22.0, -200.0)], 6.0, _l(name), halo=0)
        # supra-aortic branches and the neck arteries
        self._vessel(cv, [(2.0, -14.0, 200.0), (-10.0, -8.0, 225.0), (-18.0, -2.0, 240.0)], 6.0,
                     _l("brachiocephalic_trunk"))
        self._vessel(cv, [(-18.0, -2.0, 240.0), (-40.0, 4.0, 250.0), (-75.0, 8.0, 255.0)], 4.5,
                     _l("subclavian_artery_right"))
        self._vessel(cv, [(20.0, 0.0, 200.0), (34.0, 6.0, 235.0), (75.0, 8.0, 255.0)], 4.5,
                     _l("subclavian_artery_left"))
        self._vessel(cv, [(-18.0, -2.0, 240.0), (-24.0, 10.0, 290.0), (-24.0, 16.0, 345.0)], 4.0,
                     _l("common_carotid_artery_right"))
        self._vessel(cv, [(8.0, -8.0, 203.0), (18.0, 2.0, 240.0), (24.0, 10.0, 290.0), (24.0, 16.0, 345.0)], 4.0,
                     _l("common_carotid_artery_left"))
        # veins: brachiocephalic veins into the SVC into the right atrium
        self._vessel(cv, [(70.0, -12.0, 258.0), (30.0, -34.0, 232.0), (-24.0, -24.0, 214.0)], 6.0,
                     _l("brachiocephalic_vein_left"))
        self._vessel(cv, [(-70.0, -6.0, 258.0), (-34.0, -16.0, 236.0), (-26.0, -22.0, 214.0)], 6.5,
                     _l("brachiocephalic_vein_right"))
        self._vessel(cv, [(-26.0, -22.0, 214.0), (-28.0, -18.0, 170.0), (-24.0, -12.0, 128.0)], 10.0,
                     _l("superior_vena_cava"))

    def _chest_wall_bones(self, cv):
        t_cortex = self.t["rib_cortex"]
        t_marrow = self.t["rib_marrow"]
        drops = [18, 30, 45, 55, 62, 68, 72, 74, 70, 60, 45, 35]
        ends = [2.45, 2.55, 2.6, 2.6, 2.6, 2.6, 2.55, 2.35, 2.25, 2.15, 1.9, 1.6]
        levels = {n: c for n, c, _ in _LEVELS}
        for i in range(12):
            zt = levels[f"vertebrae_T{i + 1}"]
            for side in (1.0, -1.0):
                name = f"rib_{'left' if side > 0 else 'right'}_{i + 1}"
                phi = np.linspace(0.32, ends[i], 24)
                u = (phi - phi[0]) / (ends[i] - phi[0])
                z = zt + 6.0 - drops[i] * u**1.3
                a, b, yc = self._cavity(np.minimum(z, 262.0))
                a = np.maximum(a, 25.0) + 6.0
                b = np.maximum(b, 25.0) + 6.0
                pts = np.c_[side * a * np.sin(phi), yc + b * np.cos(phi), z]
                yv, rx, ry, _, _, _ = self.spine(zt)
                head = np.array([side * (rx + 3.0), yv + ry * 0.3, zt + 4.0])
                pts = np.vstack([head, pts])
                radius = 5.0 if i == 0 else 4.3
                blk, nd = cv.tube(pts, radius)
                if blk is None:
                    continue
                m = (nd < 1.0) & self.body_mask[blk] & ~np.isin(cv.lab[blk], self.lung_labels)
                hu = np.where(nd > 0.55, t_cortex[0], t_marrow[0]).astype(np.float32)
                cv.put(blk, m, label=_l(name), hu=hu, tex=t_marrow[1])
                if i < 10:  # costal cartilage to the sternum
                    phi2 = np.linspace(ends[i], 2.95 if i < 7 else 2.75, 8)
                    zc = z[-1] + (np.linspace(0, 1, 8) ** 1.5) * (8.0 if i < 7 else 22.0)
                    zc = np.minimum(zc, levels["vertebrae_T1"] - 10.0)
                    a, b, yc = self._cavity(zc)
                    a = np.maximum(a, 25.0) + 6.0
                    b = np.maximum(b, 25.0) + 6.0
                    cp = np.c_[side * a * np.sin(phi2), yc + b * np.cos(phi2), zc]
                    blk, nd = cv.tube(cp, 4.0)
                    if blk is not None:
                        m = (nd < 1.0) & self.body_mask[blk] & ~np.isin(cv.lab[blk], self.lung_labels)
                        m &= cv.lab[blk] != _l(name)
                        self._fill(cv, blk, m, _l("costal_cartilages"), "cartilage")
        # sternum: a plate in the anterior chest wall
        zk = np.linspace(105.0, 262.0, 12)
        _, b_c, yc = self._cavity(zk)
        front = yc - np.maximum(b_c, 25.0) - 7.0
        half_w = np.interp(zk, [105.0, 125.0, 225.0, 240.0, 262.0], [8.0, 14.0, 14.0, 24.0, 22.0])
        sl, rho = cv.column(zk, 0.0, front, half_w, 7.0, p=3.0, zlim=(105.0, 262.0))
        if sl is not None:
            m = (rho < 1.0) & self.body_mask[sl]
            hu = np.where(rho > 0.75, self.t["cortical"][0] * 0.8, self.t["cancellous"][0]).astype(np.float32)
            cv.put(sl, m, label=_l("sternum"), hu=hu, tex=self.t["cancellous"][1])
        # clavicles and scapulae
        for side in (1.0, -1.0):
            sfx = "left" if side > 0 else "right"
            a, b, yc = self.torso(258.0)
            ctrl = [(side * 20.0, yc - b - 2.0, 258.0), (side * 60.0, yc - b + 6.0, 262.0),
                    (side * 110.0, yc - 20.0, 266.0), (side * 135.0, yc + 10.0, 262.0)]
            pts, r = _path(ctrl, 6.5)
            blk, nd = cv.tube(pts, r)
            if blk is not None:
                m = (nd < 1.0) & self.body_mask[blk] & ~np.isin(cv.lab[blk], self.lung_labels)
                hu = np.where(nd > 0.6, t_cortex[0], t_marrow[0]).astype(np.float32)
                cv.put(blk, m, label=_l(f"clavicula_{sfx}"), hu=hu, tex=t_marrow[1])
            a, b, yc = self.torso(215.0)
            c = (side * 92.0, yc + b - 12.0, 212.0)
            sl, rho = cv.ellipsoid(c, (42.0, 4.5, 44.0), _rotation(side * 28.0, side * 12.0, 0.0), p=3.0)
            if sl is not None:
                m = (rho < 1.0) & self.body_mask[sl] & ~np.isin(cv.lab[sl], self.lung_labels)
                self._fill(cv, sl, m, _l(f"scapula_{sfx}"), "rib_cortex")

    def _pelvis(self, cv):
        for side in (1.0, -1.0):
            sfx = "left" if side > 0 else "right"
            sl, rho = cv.ellipsoid((side * 92.0, 46.0, -200.0), (11.0, 50.0, 52.0), _rotation(side * -35.0, side * 8, 0),
                                   p=2.6)
            if sl is not None:
                _, Y, Z = cv.coords(sl)
                m = (rho < 1.0) & self.body_mask[sl] & (Z < -150.0 - 0.15 * (Y - 46.0))
                hu = np.where(rho > 0.8, self.t["cortical"][0], self.t["cancellous"][0]).astype(np.float32)
                cv.put(sl, m, label=_l(f"hip_{sfx}"), hu=hu, tex=self.t["cancellous"][1])
        sl, rho = cv.ellipsoid((0.0, 72.0, -222.0), (44.0, 16.0, 40.0), _rotation(0, 0, -25.0), p=2.4)
        if sl is not None:
            m = (rho < 1.0) & self.body_mask[sl]
            hu = np.where(rho > 0.8, self.t["cortical"][0], self.t["cancellous"][0]).astype(np.float32)
            cv.put(sl, m, label=_l("sacrum"), hu=hu, tex=self.t["cancellous"][1])

    def _neck(self, cv):
        # airway above the trachea: larynx, oro- and nasopharynx (no class: body)
        ctrl = np.array([(0.0, 8.0, 300.0), (0.0, 10.0, 325.0), (0.0, 16.0, 350.0), (0.0, 20.0, 378.0),
                         (0.0, 16.0, 400.0)])
        pts, r = _path(ctrl, np.array([8.0, 8.0, 7.0, 6.5, 6.0]))
        blk, nd = cv.tube(pts, r + 2.5)
        if blk is not None:
            self._fill(cv, blk, nd < 1.0, BODY_LABEL, "trachea_wall")
            blk, nd = cv.tube(pts, r)
            self._fill(cv, blk, nd < 1.0, BODY_LABEL, "air")
        # thyroid: two lobes and an isthmus either side of the trachea
        for side in (1.0, -1.0):
            sl, rho = cv.ellipsoid((side * 17.0, 10.0, 292.0), (8.0, 9.0, 20.0), _rotation(0, 0, 10.0))
            if sl is not None:
                self._fill(cv, sl, (rho < 1.0) & (cv.lab[sl] != _l("trachea")), _l("thyroid_gland"), "thyroid")
        sl, rho = cv.ellipsoid((0.0, -4.0, 286.0), (13.0, 4.0, 6.0))
        if sl is not None:
            self._fill(cv, sl, (rho < 1.0) & (cv.lab[sl] != _l("trachea")), _l("thyroid_gland"), "thyroid")
        # sternocleidomastoid muscles and jugular veins (no class of their own: body)
        for side in (1.0, -1.0):
            pts, r = _path([(side * 22.0, -8.0, 262.0), (side * 40.0, 6.0, 320.0), (side * 54.0, 34.0, 392.0)], 8.5)
            blk, nd = cv.tube(pts, r)
            if blk is not None:
                self._fill(cv, blk, (nd < 1.0) & self.body_mask[blk], BODY_LABEL, "muscle")
            pts, r = _path([(side * 40.0, 28.0, 400.0), (side * 34.0, 20.0, 340.0), (side * 30.0, 10.0, 275.0)], 6.0)
            blk, nd = cv.tube(pts, r)
            if blk is not None:
                self._fill(cv, blk, (nd < 1.0) & self.body_mask[blk], BODY_LABEL, "blood")

    def _head(self, cv):
        hc = _HEAD_C + self.head_jit
        k = self.head
        outer = np.array([74.0, 92.0, 94.0]) * k
        inner = np.array([67.0, 85.0, 87.0]) * k
        sl, rho_o = cv.ellipsoid(hc, outer)
        if sl is None:
            return
        X, Y, Z = cv.coords(sl)
        rho_i = np.sqrt(((X - hc[0]) / inner[0]) ** 2 + ((Y - hc[1]) / inner[1]) ** 2 + ((Z - hc[2]) / inner[2]) ** 2)
        yrel = Y - hc[1]
        # cranial floor: anterior fossa (orbital roofs), middle fossa (deeper laterally), posterior fossa
        floor = hc[2] + np.interp(yrel, [-100.0, -38.0, -28.0, 12.0, 22.0, 120.0], [-23.0, -23.0, -42.0, -42.0, -62.0, -62.0])
        middle = np.interp(yrel, [-38.0, -28.0, 12.0, 22.0], [0.0, 1.0, 1.0, 0.0])
        floor = floor - 16.0 * middle * np.clip((np.abs(X - hc[0]) - 12.0) / 30.0, 0.0, 1.0)
        # the posterior fossa is a bowl: its floor rises towards the sides and the back
        post = np.interp(yrel, [12.0, 22.0], [0.0, 1.0])
        floor = floor + post * (16.0 * np.clip(np.abs(X - hc[0]) / 55.0, 0.0, 1.0) ** 2
                                + 14.0 * np.clip((yrel - 22.0) / 60.0, 0.0, 1.0) ** 2)
        # below the skull base: deep soft tissue of the face and upper neck
        under = (rho_o < 1.0) & (Z < floor - 6.0) & (cv.lab[sl] == BODY_LABEL) & (cv.hu[sl] > -500.0)
        self._fill(cv, sl, under, BODY_LABEL, "muscle")
        # skull vault: outer table, diploe, inner table
        vault = (rho_o < 1.0) & (rho_i >= 1.0) & (Z >= floor - 6.0)
        depth = (1.0 - rho_o) / max(1.0 - inner.min() / outer.min(), 1e-3)
        hu = np.where((depth > 0.3) & (depth < 0.7), self.t["diploe"][0], self.t["skull_table"][0]).astype(np.float32)
        cv.put(sl, vault, label=_l("skull"), hu=hu, tex=self.t["diploe"][1])
        # skull base with the foramen magnum
        fm = ((X - hc[0]) ** 2 + (Y - (hc[1] + 26.0)) ** 2) < 15.0**2
        base = (rho_i < 1.0) & (Z < floor) & (Z >= floor - 6.0) & ~fm
        cv.put(sl, base, label=_l("skull"), hu=self.t["skull_table"][0] * 0.75, tex=self.t["diploe"][1])
        cv.put(sl, (rho_i < 1.0) & (Z < floor) & (Z >= floor - 6.0) & fm, label=BODY_LABEL, hu=self.t["csf"][0],
               tex=self.t["csf"][1])
        # brain: grey and white matter, sulci, ventricles, deep grey nuclei, cerebellum, brain stem
        brain = (rho_i < 1.0) & (Z >= floor)
        fold = self.brain_fold(X, Y, Z)
        white = rho_i < 0.78 + 0.05 * fold
        gm, gt = self.t["grey"]
        wm = self.t["white"][0]
        hu = np.where(white, wm, gm).astype(np.float32)
        sulci = (rho_i > 0.86) & (self.brain_sulci(X, Y, Z) > 1.05)
        hu = np.where(sulci, self.t["csf"][0], hu)
        hu = np.where(rho_i > 0.975, self.t["csf"][0], hu)  # subarachnoid space under the vault
        cereb = (yrel > 18.0) & (Z < floor + 32.0)
        hu = np.where(cereb & ~(rho_i > 0.975), self.t["deep_grey"][0], hu)
        cv.put(sl, brain, label=_l("brain"), hu=hu, tex=gt)
        for side in (1.0, -1.0):
            sl2, r2 = cv.ellipsoid(hc + np.array([side * 11.0, -4.0, 8.0]) * k, np.array([5.5, 30.0, 9.0]) * k,
                                   _rotation(0, 0, -12.0))
            self._fill(cv, sl2, (r2 < 1.0) & (cv.lab[sl2] == _l("brain")), _l("brain"), "csf")
            sl2, r2 = cv.ellipsoid(hc + np.array([side * 21.0, 2.0, -8.0]) * k, np.array([9.0, 17.0, 9.0]) * k)
            self._fill(cv, sl2, (r2 < 1.0) & (cv.lab[sl2] == _l("brain")), _l("brain"), "deep_grey")
        pts, r = _path([hc + (0.0, 26.0, -62.0), hc + (0.0, 20.0, -40.0), hc + (0.0, 10.0, -20.0)], 11.0)
        blk, nd = cv.tube(pts, r)
        if blk is not None:
            self._fill(cv, blk, (nd < 1.0) & (cv.lab[blk] != _l("skull")), _l("brain"), "cord")
        # face: orbits with eyes, nasal cavity, maxillary sinuses, jaw, teeth, tongue, parotids, masseters
        fc = _FACE_C + self.head_jit
        for side in (1.0, -1.0):
            oc = np.array([side * 31.0, -44.0, 433.0]) + self.head_jit
            sl2, r2 = cv.ellipsoid(oc, np.array([18.0, 28.0, 18.0]) * k)
            if sl2 is not None:
                self._fill(cv, sl2, (r2 < 1.12) & (r2 >= 1.0) & (cv.lab[sl2] != _l("brain")), _l("skull"), "rib_cortex")
                self._fill(cv, sl2, (r2 < 1.0) & (cv.lab[sl2] != _l("brain")), BODY_LABEL, "fat")
            ec = np.array([side * 31.0, -57.0, 433.0]) + self.head_jit
            sl2, r2 = cv.ellipsoid(ec, np.array([12.0, 12.0, 12.0]) * k)
            self._fill(cv, sl2, r2 < 1.0, BODY_LABEL, "eye")
            sl2, r2 = cv.ellipsoid(ec + (0.0, -9.0 * k, 0.0), np.array([4.0, 2.0, 4.0]) * k)
            self._fill(cv, sl2, r2 < 1.0, BODY_LABEL, "lens")
            sc = np.array([side * 28.0, -42.0, 402.0]) + self.head_jit
            sl2, r2 = cv.ellipsoid(sc, np.array([14.0, 18.0, 16.0]) * k)
            if sl2 is not None:
                self._fill(cv, sl2, (r2 < 1.15) & (r2 >= 1.0), _l("skull"), "rib_cortex")
                self._fill(cv, sl2, r2 < 1.0, BODY_LABEL, "air")
            for c, semi in (((side * 50.0, 16.0, 386.0), (13.0, 19.0, 24.0)),):
                sl2, r2 = cv.ellipsoid(np.array(c) + self.head_jit, np.array(semi) * k)
                self._fill(cv, sl2, (r2 < 1.0) & (cv.lab[sl2] == BODY_LABEL), BODY_LABEL, "parotid")
            sl2, r2 = cv.ellipsoid(np.array((side * 50.0, -8.0, 372.0)) + self.head_jit, np.array((9.0, 20.0, 24.0)) * k)
            self._fill(cv, sl2, (r2 < 1.0) & (cv.lab[sl2] == BODY_LABEL), BODY_LABEL, "muscle")
        sl2, r2 = cv.ellipsoid(np.array((0.0, -52.0, 408.0)) + self.head_jit, np.array((10.0, 26.0, 22.0)) * k)
        self._fill(cv, sl2, r2 < 1.0, BODY_LABEL, "air")
        sl2, r2 = cv.ellipsoid(np.array((0.0, -26.0, 368.0)) + self.head_jit, np.array((26.0, 32.0, 15.0)) * k)
        self._fill(cv, sl2, (r2 < 1.0) & (cv.lab[sl2] == BODY_LABEL), BODY_LABEL, "muscle")
        # mandible (a U-shaped tube with rami) and teeth; TotalSegmentator's skull class includes the jaw
        jaw = np.array([(-49.0, 24.0, 362.0), (-46.0, -18.0, 351.0), (-28.0, -54.0, 345.0), (0.0, -64.0, 343.0),
                        (28.0, -54.0, 345.0), (46.0, -18.0, 351.0), (49.0, 24.0, 362.0)])
        jaw = (jaw - fc) * k + fc
        pts, r = _path(jaw, 7.5)
        self._bone_tube(cv, pts, r, _l("skull"), "skull_table", "diploe")
        for side in (1.0, -1.0):
            ramus = (np.array([(side * 49.0, 24.0, 362.0), (side * 51.0, 26.0, 385.0), (side * 50.0, 30.0, 404.0)]) - fc) * k + fc
            pts, r = _path(ramus, 6.5)
            self._bone_tube(cv, pts, r, _l("skull"), "skull_table", "diploe")
        for dz, scale in ((12.0, 0.94), (24.0, 0.97)):
            arch, _ = _path(jaw, 7.5, step=1.0)
            for t in np.linspace(0.12, 0.88, 12):
                c = arch[int(t * (len(arch) - 1))]
                c = fc + (c - fc) * np.array([scale, scale, 1.0]) + (0.0, 0.0, dz)
                sl2, r2 = cv.ellipsoid(c, np.array([3.2, 3.2, 5.0]) * k)
                self._fill(cv, sl2, r2 < 1.0, _l("skull"), "teeth")

    def _bone_tube(self, cv, pts, r, label, cortex, marrow):
        blk, nd = cv.tube(pts, r)
        if blk is None:
            return
        m = (nd < 1.0) & self.body_mask[blk]
        hu = np.where(nd > 0.6, self.t[cortex][0], self.t[marrow][0]).astype(np.float32)
        cv.put(blk, m, label=label, hu=hu, tex=self.t[marrow][1])


# ---------------------------------------------------------------------------------------------------
# Phantom assembly
# ---------------------------------------------------------------------------------------------------


def _patient_frame(body: _Body, config: PhantomConfig):
    """The patient scale and the nominal point at the centre of the field of view."""
    fov = np.array(config.size, float) * np.array(config.spacing, float)
    half_w, front, back = body.extent(config.region)
    table = 26.0  # gap + table thickness (nominal mm)
    z0, z1 = _REGION_Z_RANGE[config.region]
    fit_xy = min(0.94 * fov[0] / (2 * half_w), 0.96 * fov[1] / (back + table - front))
    fit_z = fov[2] / (z1 - z0)
    # the whole region in view, unless that shrinks the patient below 65 % of the in-plane fit (thin slabs:
    # the z window then shows the middle of the region)
    scale = min(1.0, fit_xy, max(fit_z, 0.65 * fit_xy))
    centre = (0.0, (front + back + table) / 2.0, (z0 + z1) / 2.0)
    return scale, centre, back


def _paint_table(cv: _Canvas, back: float):
    """A carbon-fibre couch under the patient (label 0): dense shells around a foam core, anti-aliased."""
    top = back + 1.5
    sl = cv.box((-260.0, top - 5.0, -1e4), (260.0, top + 60.0, 1e4))
    if sl is None:
        return
    shape = tuple(s.stop - s.start for s in sl)
    y = np.broadcast_to(cv.axes[1][None, sl[1], None], shape)
    x = np.broadcast_to(cv.axes[0][None, None, sl[2]], shape)
    h = cv.spacing[1] / cv.s  # voxel height in nominal mm
    curve = top + 0.0006 * x**2  # slightly curved

    def frac(a, b):  # fraction of each voxel's y extent inside [curve + a, curve + b]
        lo = np.maximum(y - h / 2, curve + a)
        hi = np.minimum(y + h / 2, curve + b)
        return np.clip(hi - lo, 0.0, h) / h

    shell = frac(0.0, 2.5) + frac(17.5, 20.0)
    core = frac(2.5, 17.5)
    hu = shell * _T["table_shell"][0] + core * _T["table_core"][0] + (1.0 - shell - core) * -1000.0
    free = (cv.lab[sl] == 0) & (np.abs(x) < 240.0) & ((shell + core) > 0)
    cv.put(sl, free, hu=hu.astype(np.float32), tex=0.0)


def _texture(rng, shape, spacing) -> np.ndarray:
    """Unit-variance correlated noise: a fine (1.2 mm) and a coarse (4 mm) component."""
    spacing = np.asarray(spacing, float)[::-1]  # z, y, x
    out = np.zeros(shape, dtype=np.float32)
    for corr, weight in ((1.2, 1.0), (4.0, 0.6)):
        white = rng.standard_normal(shape, dtype=np.float32)
        f = ndimage.gaussian_filter(white, sigma=np.maximum(corr / spacing, 0.3), mode="wrap")
        sd = float(f.std()) or 1.0
        out += (weight / sd) * f
    out /= np.float32(math.sqrt(1.0 + 0.36))
    return out


def _psf_sigma(spacing) -> np.ndarray:
    """Gaussian sigma in voxels (z, y, x): voxel integration (box of one voxel) and a 0.6 mm scanner PSF."""
    sp = np.asarray(spacing, float)[::-1]
    return np.sqrt((0.29 * sp) ** 2 + 0.6**2) / sp


def _lesions(cv: _Canvas, config: PhantomConfig, rng) -> np.ndarray:
    model = LESION_MODELS[config.region]
    organ_labels = np.array([_l(n) for n in model["organs"]], dtype=np.uint8)
    organ = np.isin(cv.lab, organ_labels)
    mask = np.zeros(cv.shape, dtype=bool)
    if config.lesions == 0:
        return mask
    if not organ.any():
        raise InputError(
            f"no {'/'.join(model['organs'])} in this field of view to put lesions in; "
            "enlarge the volume or set lesions=0"
        )
    sp = np.asarray(config.spacing, float)[::-1]  # z, y, x
    edt = ndimage.distance_transform_edt(organ, sampling=sp)  # mm to the nearest non-organ voxel
    organ_hu = float(np.median(cv.hu[organ]))
    irr = model["irregularity"]
    placed = []  # (centre index zyx, physical radius)
    rmin, rmax = config.lesion_radius_mm
    for _ in range(int(config.lesions)):
        radius = float(rng.uniform(rmin, rmax))
        bump = _Fourier(rng, 6, (1.5, 3.0))  # boundary bumps over the unit sphere of directions
        if model["mode"] == "absolute":
            hu = float(rng.uniform(*model["hu"][0]))
        else:
            lo, hi = model["hu"][int(rng.integers(len(model["hu"])))]
            hu = organ_hu + float(rng.uniform(lo, hi))
        # largest extent of the bumpy boundary plus half a voxel keeps the lesion inside the organ
        need = radius * (1.0 + 1.5 * irr) + 0.5 * float(sp.max())
        best = float(edt.max())
        if best < need:  # does not fit: shrink to what fits (still wholly inside)
            radius = max((best - 0.5 * float(sp.max())) / (1.0 + 1.5 * irr), 0.5 * float(sp.min()))
            need = best
        cand = np.argwhere(edt >= need - 1e-6)
        if placed:
            keep = np.ones(len(cand), dtype=bool)
            for c0, r0 in placed:
                d = np.sqrt((((cand - c0) * sp) ** 2).sum(axis=1))
                keep &= d > (r0 + radius) * (1.0 + 1.5 * irr) + 2.0
            if keep.any():
                cand = cand[keep]
        centre = cand[int(rng.integers(len(cand)))]
        placed.append((centre, radius))
        # physical offsets in a box around the centre
        ext = np.ceil(radius * (1.0 + 1.5 * irr) / sp).astype(int) + 1
        sl = tuple(slice(max(int(c) - e, 0), min(int(c) + e + 1, n)) for c, e, n in zip(centre, ext, cv.shape))
        gz, gy, gx = np.meshgrid(*[(np.arange(s.start, s.stop) - c) * d for s, c, d in zip(sl, centre, sp)],
                                 indexing="ij")
        dist = np.sqrt(gx**2 + gy**2 + gz**2) + 1e-6
        r_dir = radius * (1.0 + irr * np.clip(bump(gx / dist, gy / dist, gz / dist), -1.5, 1.5))
        m = (dist < r_dir) & organ[sl]
        mask[sl] |= m
        cv.put(sl, m, hu=np.float32(hu), tex=np.float32(model["texture"]))
    return mask


def _to_image(array: np.ndarray, config: PhantomConfig) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    spacing = np.asarray(config.spacing, float)
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(float(o) for o in -(np.asarray(config.size, float) - 1) / 2.0 * spacing))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return img


def make_phantom(config: PhantomConfig) -> Phantom:
    """A procedural CT volume (HU), its anatomy labels and its lesion mask; same config, same arrays.

    The region's body is scaled to fit the field of view (size x spacing) and built in physical space,
    so another spacing over the same field of view gives the same anatomy. Lesions, when asked for,
    lie wholly inside the region's host organ (lungs, liver or brain; see LESION_MODELS).
    """
    if not isinstance(config, PhantomConfig):
        raise InputError("make_phantom expects a PhantomConfig")
    seed = int(config.seed)
    body = _Body(np.random.default_rng([seed, 0]))
    scale, centre, back = _patient_frame(body, config)
    warp = [lambda x, y, z, f=f, a=a: a * f(x, y, z) for f, a in zip(body.warp, body.warp_amp)]
    # a 3-mode unit-variance field is bounded by sqrt(2 * 3): the largest displacement in nominal mm
    cv = _Canvas(config, scale, centre, warp, warp_amp=max(body.warp_amp) * math.sqrt(6.0) + 1.0)
    body.paint(cv)
    # nothing outside the body outline belongs to the patient
    outside = ~body.body_mask
    cv.lab[outside] = 0
    cv.hu[outside] = -1000.0
    cv.tex[outside] = 0.0
    _paint_table(cv, back)
    lesion = _lesions(cv, config, np.random.default_rng([seed, 2]))
    noise = _texture(np.random.default_rng([seed, 1]), cv.shape, config.spacing)
    image = cv.hu + cv.tex * noise
    image = ndimage.gaussian_filter(image, sigma=_psf_sigma(config.spacing), mode="nearest")
    np.clip(image, -1024.0, 3071.0, out=image)
    return Phantom(
        image=_to_image(image.astype(np.float32), config),
        labels=_to_image(cv.lab, config),
        lesion_mask=_to_image(lesion.astype(np.uint8), config),
        region=config.region,
    )


def organ_mean_hu(phantom: Phantom, erode: bool = True) -> dict[str, float]:
    """Mean HU per labelled structure (names from anatomy.ANATOMY_CLASSES), background excluded.

    With erode=True each label is eroded by one voxel first (to avoid partial volume at its edges);
    a label that erodes away is measured over all its voxels.
    """
    image = sitk.GetArrayViewFromImage(phantom.image)
    labels = sitk.GetArrayViewFromImage(phantom.labels)
    out: dict[str, float] = {}
    for value in np.unique(labels):
        if value == 0:
            continue
        m = labels == value
        if erode:
            e = ndimage.binary_erosion(m)
            if e.any():
                m = e
        out[ANATOMY_CLASSES.get(int(value), str(int(value)))] = float(image[m].mean())
    return out
