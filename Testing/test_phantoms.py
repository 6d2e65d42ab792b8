"""The procedural CT phantoms: anatomy labels, HU, partial volume, lung vessels, contrast phases, lesions.

The low-dose scanner model is tested in test_scanner.py."""

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
        if region == "chest":  # solid (+20..+60 HU), part-solid or ground-glass (-650..-400 HU) in the lung
            assert -700.0 <= mean <= 80.0 and mean > organ_mean + 150.0
        elif region == "abdomen":  # hypodense (30..60 HU below the liver) or hyperdense (25..50 above)
            assert 15.0 <= abs(mean - organ_mean) <= 70.0
        else:  # hyper- or hypodense brain lesions
            assert 6.0 <= abs(mean - organ_mean) <= 50.0


def test_lesion_kinds_stay_inside_their_organ():
    """Many nodules of every kind (spiculated ones reach out further) stay inside the lungs; the solid
    and the ground-glass densities both occur."""
    ph = make_phantom(PhantomConfig(region="chest", size=(80, 80, 48), spacing=(3.0, 3.0, 4.0), lesions=8,
                                    lesion_radius_mm=(4.0, 9.0), seed=4))
    image, labels, mask = arr(ph.image), arr(ph.labels), arr(ph.lesion_mask).astype(bool)
    assert not (mask & ~np.isin(labels, ids(LESION_MODELS["chest"]["organs"]))).any()
    components, count = ndimage.label(mask)
    assert count >= 6  # nodules keep clear of each other; a spicule may touch a neighbour
    peaks = ndimage.maximum(image, components, range(1, count + 1))
    assert (np.asarray(peaks) > -100.0).any()  # a solid part somewhere
    kinds = {k["name"] for k in LESION_MODELS["chest"]["kinds"]}
    assert {"solid nodule", "part-solid nodule", "ground-glass nodule"} <= kinds


# ------------------------------------------------------------------------------------------ realism


def test_partial_volume_between_the_two_tissues_at_a_boundary():
    """At the skin (subcutaneous fat against air) the outermost body voxels take values between air and
    fat (the render is averaged over sub-voxel-shifted grids), not only one or the other."""
    ph = make_phantom(PhantomConfig(region="abdomen", size=(96, 96, 48), spacing=(2.0, 2.0, 3.0), seed=1))
    image, labels = arr(ph.image), arr(ph.labels)
    body = labels > 0
    # voxels either side of the outline: body voxels with an outside face-neighbour and vice versa
    edge = (body & ndimage.binary_dilation(~body)) | (~body & ndimage.binary_dilation(body))
    edge &= ~ndimage.binary_dilation(image > -50.0, iterations=2)  # the skin against air, not the couch
    inner = body & ~ndimage.binary_dilation(~body, iterations=2)
    shell = inner & ~ndimage.binary_erosion(inner, iterations=2)  # the fat 2-3 voxels under the skin
    hu_fat = float(np.median(image[shell]))
    assert -130.0 < hu_fat < -50.0 and edge.sum() >= 100
    t = (image[edge] + 1000.0) / (hu_fat + 1000.0)  # 0 at air, 1 at fat
    assert np.all((t > -0.05) & (t < 1.2))
    assert ((t > 0.1) & (t < 0.9)).mean() > 0.25, "too few intermediate values at the boundary"


def test_lung_vessels_fill_the_lungs():
    """Vessel trees taper to about a millimetre: 3-15 % of lung voxels above -500 HU at 1.5 mm, and the
    parenchyma itself near -850 HU, denser posteriorly (gravity)."""
    ph = make_phantom(PhantomConfig(region="chest", size=(192, 160, 96), spacing=(1.5, 1.5, 1.5), seed=3))
    image, labels = arr(ph.image), arr(ph.labels)
    lung = np.isin(labels, ids(LOBES))
    above = float((image[lung] > -500.0).mean())
    assert 0.03 <= above <= 0.15, above
    parenchyma = lung & (image < -700.0)
    ys = np.nonzero(parenchyma)[1]
    front, back = np.percentile(ys, 25), np.percentile(ys, 75)
    ant = np.median(image[parenchyma & (np.arange(image.shape[1])[None, :, None] < front)])
    post = np.median(image[parenchyma & (np.arange(image.shape[1])[None, :, None] > back)])
    assert -900.0 < ant < post < -780.0, (ant, post)


def test_brain_cortex_is_a_folded_ribbon():
    """Grey matter is a thin ribbon along the CSF (convexity, sulci, fissures), not a thick shell: most
    grey voxels lie within 5 mm of CSF, white matter is the larger part of the brain, and the two are
    about 10 HU apart."""
    spacing = (1.9, 1.9, 3.1)
    ph = make_phantom(PhantomConfig(region="head_neck", size=(128, 128, 96), spacing=spacing, seed=1))
    image, labels = arr(ph.image), arr(ph.labels)
    brain = labels == anatomy.label_index("brain")
    csf = brain & (image < 18.0)
    dist = ndimage.distance_transform_edt(~csf, sampling=spacing[::-1])
    core = ndimage.binary_erosion(brain, iterations=1)
    grey, white = core & (image > 36.0), core & (image < 31.0)
    assert 0.05 < grey.sum() / core.sum() < 0.5 and white.sum() / core.sum() > 0.35
    assert (dist[grey] < 5.0).mean() > 0.7, (dist[grey] < 5.0).mean()
    assert (dist[white] < 5.0).mean() < (dist[grey] < 5.0).mean() - 0.15
    difference = np.median(image[core & (image > 34.0) & (image < 50.0)]) - np.median(image[white])
    assert 6.0 < difference < 16.0, difference


def test_contrast_phases_change_blood_and_organs_not_anatomy():
    base = dict(region="abdomen", size=(64, 64, 40), spacing=(4.0, 4.0, 5.0), seed=6)
    means, labels = {}, {}
    for phase in ("native", "arterial", "portal_venous"):
        ph = make_phantom(PhantomConfig(contrast=phase, **base))
        assert ph.contrast == phase
        means[phase] = organ_mean_hu(ph)
        labels[phase] = arr(ph.labels)
    assert np.array_equal(labels["native"], labels["arterial"])
    assert np.array_equal(labels["native"], labels["portal_venous"])
    assert 30.0 <= means["native"]["aorta"] <= 60.0
    assert means["arterial"]["aorta"] > 200.0
    assert 100.0 <= means["portal_venous"]["aorta"] <= 220.0
    assert means["portal_venous"]["liver"] > means["native"]["liver"] + 25.0
    assert means["portal_venous"]["portal_vein_and_splenic_vein"] > means["portal_venous"]["liver"] + 30.0
    assert means["arterial"]["kidney_left"] > means["native"]["kidney_left"] + 50.0
    # random: drawn from the seed, reproducibly, and not always the same phase
    drawn = [make_phantom(PhantomConfig(contrast="random", **{**base, "size": (16, 16, 8), "seed": s})).contrast
             for s in range(8)]
    assert len(set(drawn)) >= 2 and set(drawn) <= {"native", "arterial", "portal_venous"}
    again = make_phantom(PhantomConfig(contrast="random", **{**base, "size": (16, 16, 8), "seed": 0})).contrast
    assert again == drawn[0]


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
        {"contrast": "delayed"},
    ):
        with pytest.raises(InputError):
            PhantomConfig(**kwargs)


# ------------------------------------------------------------------------------- shoulders, face, CLI


def test_chest_top_shows_the_shoulder_girdle():
    """Above the lung apices a chest phantom shows the shoulders (humeral heads, scapulae, clavicles,
    muscles in fat), not just a neck; the arms hang by the body or are raised, by seed."""
    below_heart = []
    for seed in range(4):
        ph = make_phantom(PhantomConfig(region="chest", size=(64, 64, 40), spacing=(7.0, 7.0, 7.5), seed=seed))
        image, labels = arr(ph.image), arr(ph.labels)
        present = set(np.unique(labels))
        assert set(ids(["humerus_left", "humerus_right", "scapula_left", "scapula_right", "clavicula_left",
                        "clavicula_right"])) <= present, seed
        lungs = np.isin(labels, ids(LOBES)).any(axis=(1, 2))
        top = int(np.nonzero(lungs)[0].max()) + 1
        inlet = labels[top] > 0
        width = lambda m: np.ptp(np.nonzero(m.any(axis=0))[0]) if m.any() else 0  # noqa: E731
        assert width(inlet) > 0.8 * max(width(labels[z] > 0) for z in np.nonzero(lungs)[0]), seed
        fat = (image[top] < -50.0) & (image[top] > -200.0) & inlet
        assert fat.sum() > 0.2 * inlet.sum(), seed
        heart = np.nonzero((labels == anatomy.label_index("heart")).any(axis=(1, 2)))[0]
        below_heart.append(bool(np.isin(labels[: int(heart.mean())], ids(["humerus_left", "humerus_right"])).any()))
    assert any(below_heart) and not all(below_heart), below_heart  # some arms down, some raised


def test_tight_field_of_view_keeps_the_nose():
    """The head's extent includes the nose tip: a field of view just fitting the head leaves air in front."""
    ph = make_phantom(PhantomConfig(region="head_neck", size=(96, 80, 64), spacing=(2.5, 2.5, 5.0), seed=2))
    image, labels = arr(ph.image), arr(ph.labels)
    head = (labels == anatomy.label_index("skull")).any(axis=(1, 2))  # the slices of the head and face
    body_rows = np.nonzero((labels[head] > 0).any(axis=(0, 2)))[0]
    assert body_rows.min() >= 2 and np.all(image[head][:, :2, :] < -990.0), body_rows.min()


def test_phantom_command_contrast(tmp_path, capsys):
    """meddifffm phantom --contrast writes the phase asked for; random says which phase it drew."""
    from MedDiffFMLogic.cli import PHANTOM, main
    from MedDiffFMLogic.phantoms.contrast import CONTRAST_CHOICES

    assert tuple(PHANTOM["contrast"].choices) == tuple(CONTRAST_CHOICES)
    common = ["--region", "abdomen", "--size", "24,24,16", "--spacing", "12,12,16", "--seed", "4"]
    config = dict(region="abdomen", size=(24, 24, 16), spacing=(12.0, 12.0, 16.0), seed=4)
    for phase in ("arterial", "random"):
        out = tmp_path / f"{phase}.nii.gz"
        assert main(["phantom", *common, "--contrast", phase, "-o", str(out)]) == 0
        expected = make_phantom(PhantomConfig(contrast=phase, **config))
        assert np.array_equal(arr(sitk.ReadImage(str(out))), arr(expected.image))
    assert f"contrast phase {expected.contrast}" in capsys.readouterr().err
    native = make_phantom(PhantomConfig(**config))
    assert not np.array_equal(arr(sitk.ReadImage(str(tmp_path / "arterial.nii.gz"))), arr(native.image))
    with pytest.raises(SystemExit) as stop:
        main(["phantom", *common, "--contrast", "delayed", "-o", str(tmp_path / "x.nii.gz")])
    assert stop.value.code == 2


def test_cervical_vertebrae_have_transverse_foramina():
    """Cervical vertebrae have their own template: besides the spinal canal each holds a transverse
    foramen on either side (the thoracic template has the canal only)."""
    ph = make_phantom(PhantomConfig(region="head_neck", size=(200, 240, 100), spacing=(1.0, 1.0, 3.0), seed=1))
    labels = arr(ph.labels)
    for name in ("vertebrae_C4", "vertebrae_C6"):
        bone = labels == anatomy.label_index(name)
        zs = np.nonzero(bone.any(axis=(1, 2)))[0]
        section = bone[zs[len(zs) // 2]]
        holes, n = ndimage.label(ndimage.binary_fill_holes(section) & ~section)
        sizes = np.sort(ndimage.sum(holes > 0, holes, range(1, n + 1)))[::-1]
        assert n >= 3 and sizes[0] > 100 and 5 <= sizes[1] < 60 and 5 <= sizes[2] < 60, (name, sizes)
        centres = ndimage.center_of_mass(holes > 0, holes, range(1, n + 1))
        xs = sorted(c[1] for c, sz in zip(centres, ndimage.sum(holes > 0, holes, range(1, n + 1))) if sz < 60)
        assert xs[0] < section.shape[1] / 2 < xs[-1], (name, xs)  # one each side


def test_field_of_view_keeps_the_arms():
    """The body's extent includes the shoulders and arms: a chest field of view fits them (seed 0 has its
    arms down by the body), leaving air at the left and right edges."""
    ph = make_phantom(PhantomConfig(region="chest", size=(64, 64, 40), spacing=(7.0, 7.0, 7.5), seed=0))
    labels = arr(ph.labels)
    arms = np.isin(labels, ids(["humerus_left", "humerus_right"]))
    assert arms[: labels.shape[0] // 2].any()  # down: beside the lower chest too
    assert not (labels[:, :, :2] > 0).any() and not (labels[:, :, -2:] > 0).any()
