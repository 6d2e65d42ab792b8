"""The procedural CT phantoms, their anatomy labels, lesions and the low-dose noise model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from MedDiffFMLogic import anatomy
from MedDiffFMLogic.errors import InputError
from MedDiffFMLogic.phantoms import (
    LESION_MODELS,
    REFERENCE_HU_RANGES,
    Phantom,
    PhantomConfig,
    make_phantom,
    organ_mean_hu,
    simulate_low_dose,
)

REGIONS = ("head_neck", "chest", "abdomen")
LOBES = [
    "lung_upper_lobe_left",
    "lung_lower_lobe_left",
    "lung_upper_lobe_right",
    "lung_middle_lobe_right",
    "lung_lower_lobe_right",
]
# structures every default phantom of a region must contain
REQUIRED = {
    "chest": ["heart", "aorta", "trachea", "esophagus", "sternum", "spinal_cord", "vertebrae_T6",
              "rib_left_5", "rib_right_5", "superior_vena_cava", *LOBES],
    "abdomen": ["liver", "spleen", "kidney_left", "kidney_right", "stomach", "pancreas", "gallbladder", "aorta",
                "inferior_vena_cava", "colon", "small_bowel", "duodenum", "vertebrae_L2", "iliopsoas_left"],
    "head_neck": ["brain", "skull", "spinal_cord", "thyroid_gland", "vertebrae_C3", "trachea",
                  "common_carotid_artery_left"],
}


def arr(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def ids(names) -> list[int]:
    return [anatomy.label_index(n) for n in names]


@pytest.fixture(scope="module")
def phantoms() -> dict[str, Phantom]:
    return {region: make_phantom(PhantomConfig(region=region, seed=0)) for region in REGIONS}


# ------------------------------------------------------------------------------------------ anatomy


def test_anatomy_vocabulary():
    classes = anatomy.TOTALSEGMENTATOR_CLASSES
    assert sorted(classes) == list(range(1, 118))
    assert len(set(classes.values())) == 117
    assert (classes[1], classes[2], classes[3], classes[4], classes[5]) == (
        "spleen", "kidney_right", "kidney_left", "gallbladder", "liver")
    assert (classes[51], classes[52], classes[90], classes[91]) == ("heart", "aorta", "brain", "skull")
    assert (classes[116], classes[117]) == ("sternum", "costal_cartilages")
    assert anatomy.BODY_LABEL == 118 and anatomy.ANATOMY_CLASSES[118] == "body"
    assert anatomy.ANATOMY_CLASSES[0] == "background"
    assert anatomy.NUM_ANATOMY_CLASSES == 119 == len(anatomy.ANATOMY_CLASSES)
    assert anatomy.label_index("liver") == 5 and anatomy.label_index("body") == 118
    with pytest.raises(InputError, match="liver"):
        anatomy.label_index("livr")


# ------------------------------------------------------------------------------------------ phantoms


@pytest.mark.parametrize("region", REGIONS)
def test_geometry_and_types(phantoms, region):
    ph = phantoms[region]
    assert ph.region == region
    assert ph.image.GetPixelID() == sitk.sitkFloat32
    assert ph.labels.GetPixelID() == sitk.sitkUInt8
    assert ph.lesion_mask.GetPixelID() == sitk.sitkUInt8
    for img in (ph.image, ph.labels, ph.lesion_mask):
        assert img.GetSize() == (96, 96, 64)
        assert np.allclose(img.GetSpacing(), (2.0, 2.0, 2.5))
        assert np.allclose(img.GetDirection(), np.eye(3).ravel())
        assert np.allclose(img.GetOrigin(), ph.image.GetOrigin())
    # the volume is centred on (0, 0, 0) mm
    centre = ph.image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in ph.image.GetSize()])
    assert np.allclose(centre, 0.0, atol=1e-6)
    assert not arr(ph.lesion_mask).any()  # lesions=0


@pytest.mark.parametrize("region", REGIONS)
def test_labels_are_valid_and_complete(phantoms, region):
    ph = phantoms[region]
    labels = arr(ph.labels)
    present = {anatomy.ANATOMY_CLASSES[int(v)] for v in np.unique(labels)}
    assert set(np.unique(labels)) <= set(anatomy.ANATOMY_CLASSES)
    assert {"background", "body"} <= present
    missing = [n for n in REQUIRED[region] if n not in present]
    assert not missing, f"{region} lacks {missing}"
    # outside the body: air (or the table, also label 0); the first rows (anterior) are plain air
    image = arr(ph.image)
    assert np.all(image[:, :3, :] < -990.0)
    assert np.all(labels[:, :3, :] == 0)
    # inside the body the image is not air except in airways, lungs and gas
    assert np.median(image[labels == anatomy.BODY_LABEL]) > -200.0


@pytest.mark.parametrize("region", REGIONS)
def test_organ_hu_in_reference_ranges(phantoms, region):
    ph = phantoms[region]
    image, labels = arr(ph.image), arr(ph.labels)
    checked = []
    for value in np.unique(labels):
        name = anatomy.ANATOMY_CLASSES[int(value)]
        if name not in REFERENCE_HU_RANGES:
            continue
        core = ndimage.binary_erosion(labels == value)
        if core.sum() < 20:  # too thin at this sampling to measure without partial volume
            continue
        lo, hi = REFERENCE_HU_RANGES[name]
        mean = float(image[core].mean())
        assert lo <= mean <= hi, f"{region}: {name} mean {mean:.1f} HU outside [{lo}, {hi}]"
        checked.append(name)
    assert len(checked) >= 5, checked
    means = organ_mean_hu(ph)
    assert set(means) <= set(anatomy.ANATOMY_CLASSES.values()) and "background" not in means
    main = {"chest": "heart", "abdomen": "liver", "head_neck": "brain"}[region]
    assert REFERENCE_HU_RANGES[main][0] <= means[main] <= REFERENCE_HU_RANGES[main][1]


def test_same_seed_same_phantom_other_seed_differs():
    cfg = PhantomConfig(region="chest", size=(48, 48, 32), spacing=(4.0, 4.0, 5.0), lesions=1, seed=11)
    a, b = make_phantom(cfg), make_phantom(cfg)
    for x, y in ((a.image, b.image), (a.labels, b.labels), (a.lesion_mask, b.lesion_mask)):
        assert np.array_equal(arr(x), arr(y))
    c = make_phantom(PhantomConfig(region="chest", size=(48, 48, 32), spacing=(4.0, 4.0, 5.0), lesions=1, seed=12))
    assert not np.array_equal(arr(a.image), arr(c.image))
    assert not np.array_equal(arr(a.labels), arr(c.labels))


def test_anisotropic_spacing_gives_the_same_anatomy():
    """Same seed and field of view, 1 mm vs 3 mm slices: organ volumes (mm^3) agree within 10 %."""
    iso = make_phantom(PhantomConfig(region="abdomen", size=(128, 128, 96), spacing=(1.0, 1.0, 1.0), seed=5))
    thick = make_phantom(PhantomConfig(region="abdomen", size=(128, 128, 32), spacing=(1.0, 1.0, 3.0), seed=5))
    vol_iso = np.bincount(arr(iso.labels).ravel(), minlength=119) * 1.0
    vol_thick = np.bincount(arr(thick.labels).ravel(), minlength=119) * 3.0
    compared = []
    for value in range(1, 119):
        if max(vol_iso[value], vol_thick[value]) < 3000.0:  # small structures: sampling noise dominates
            continue
        name = anatomy.ANATOMY_CLASSES[value]
        ratio = vol_thick[value] / max(vol_iso[value], 1.0)
        assert abs(ratio - 1.0) < 0.10, f"{name}: {vol_iso[value]:.0f} vs {vol_thick[value]:.0f} mm^3"
        compared.append(name)
    assert {"liver", "stomach", "kidney_left", "kidney_right", "colon", "body"} <= set(compared)
    # and the same place: the liver's centre of mass (mm) agrees to a couple of millimetres
    def centre(ph):
        m = arr(ph.labels) == anatomy.label_index("liver")
        idx = np.array(ndimage.center_of_mass(m))[::-1]
        return np.array(ph.labels.TransformContinuousIndexToPhysicalPoint(idx.tolist()))

    assert np.linalg.norm(centre(iso) - centre(thick)) < 2.0


@pytest.mark.parametrize("region", REGIONS)
def test_lesions_inside_their_organ_and_contrasted(region):
    n, rmin, rmax = 3, 5.0, 10.0
    ph = make_phantom(PhantomConfig(region=region, lesions=n, lesion_radius_mm=(rmin, rmax), seed=2))
    image, labels, mask = arr(ph.image), arr(ph.labels), arr(ph.lesion_mask).astype(bool)
    assert mask.any() and set(np.unique(arr(ph.lesion_mask))) == {0, 1}
    model = LESION_MODELS[region]
    organ = np.isin(labels, ids(model["organs"]))
    assert not (mask & ~organ).any(), "lesion voxels outside the host organ"
    components, count = ndimage.label(mask)
    assert count == n
    voxel = float(np.prod(ph.image.GetSpacing()))
    background = ndimage.binary_erosion(organ & ~ndimage.binary_dilation(mask, iterations=3))
    organ_mean = float(image[background].mean())
    for k in range(1, count + 1):
        lesion = components == k
        r_eq = (3.0 * lesion.sum() * voxel / (4.0 * math.pi)) ** (1.0 / 3.0)
        assert 0.6 * rmin <= r_eq <= 1.4 * rmax
        core = ndimage.binary_erosion(lesion)
        mean = float(image[core if core.sum() >= 3 else lesion].mean())
        if region == "chest":  # solid nodules +20..+60 HU in -850 HU lung
            assert -20.0 <= mean <= 80.0 and mean > organ_mean + 600.0
        elif region == "abdomen":  # hypodense liver lesions, 30..60 HU below the liver
            assert -70.0 <= mean - organ_mean <= -15.0
        else:  # hyper- or hypodense brain lesions
            assert 6.0 <= abs(mean - organ_mean) <= 50.0


# ------------------------------------------------------------------------------------------ low dose


@pytest.fixture(scope="module")
def liver_slab():
    """Ten slices of the default abdomen phantom through the liver, and the liver's core there."""
    ph = make_phantom(PhantomConfig(region="abdomen", seed=0))
    liver = arr(ph.labels) == anatomy.label_index("liver")
    z = int(np.argmax(liver.sum(axis=(1, 2))))
    z0 = max(z - 5, 0)
    slab = ph.image[:, :, z0 : z0 + 10]
    core = ndimage.binary_erosion(liver[z0 : z0 + 10], iterations=2)
    assert core.sum() > 500
    return slab, core


def test_low_dose_noise_grows_like_inverse_sqrt_dose(liver_slab):
    slab, core = liver_slab
    clean = arr(slab).copy()
    std, bias = {}, {}
    for dose in (1.0, 0.25, 0.1):
        noisy = simulate_low_dose(slab, dose, seed=3)
        assert noisy.GetPixelID() == sitk.sitkFloat32
        assert noisy.GetSize() == slab.GetSize()
        assert np.allclose(noisy.GetSpacing(), slab.GetSpacing())
        assert np.allclose(noisy.GetOrigin(), slab.GetOrigin())
        diff = arr(noisy) - clean
        std[dose] = float(diff[core].std())
        bias[dose] = float(diff[core].mean())
    assert np.array_equal(arr(slab), clean), "the input image was modified"
    assert std[0.1] > std[0.25] > std[1.0]
    assert 5.0 <= std[1.0] <= 20.0, std  # full dose: about 10 HU in soft tissue
    # ratios follow 1/sqrt(dose): 2.0 and 3.16, within a loose factor
    assert 1.6 <= std[0.25] / std[1.0] <= 2.5, std
    assert 2.4 <= std[0.1] / std[1.0] <= 4.0, std
    assert all(abs(b) < 10.0 for b in bias.values()), bias


def test_low_dose_noise_is_correlated_and_reproducible(liver_slab):
    slab, core = liver_slab
    a = arr(simulate_low_dose(slab, 0.25, seed=7))
    b = arr(simulate_low_dose(slab, 0.25, seed=7))
    c = arr(simulate_low_dose(slab, 0.25, seed=8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    noise = (a - arr(slab))[5]
    # filtered back-projection noise: neighbouring pixels are anti-correlated/correlated, not independent
    centre = noise[30:70, 30:70]
    rho = np.corrcoef(centre[:, :-1].ravel(), centre[:, 1:].ravel())[0, 1]
    assert abs(rho) > 0.05


def test_bad_inputs_raise_input_error():
    for kwargs in (
        {"region": "pelvis"},
        {"region": "unknown"},
        {"size": (96, 96)},
        {"size": (4, 96, 96)},
        {"spacing": (1.0, 0.0, 1.0)},
        {"lesions": -1},
        {"lesion_radius_mm": (5.0, 2.0)},
        {"seed": -1},
    ):
        with pytest.raises(InputError):
            PhantomConfig(**kwargs)
    img = sitk.Image(16, 16, 4, sitk.sitkFloat32)
    with pytest.raises(InputError):
        simulate_low_dose(img, 0.0)
    with pytest.raises(InputError):
        simulate_low_dose(img, 0.5, full_dose_photons=-1.0)
