"""Issue 15, "Region": `--region auto` (the default) detects the body region from the scan, says what it
found, and a given region that contradicts the scan is warned about (a lung nodule inpainted with
`--region abdomen` was filled with soft tissue)."""

from __future__ import annotations

import io
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import make_tiny_net
from MedDiffFMLogic import ctio
from MedDiffFMLogic.errors import InputError
from MedDiffFMLogic.modelfiles import save_model
from MedDiffFMLogic.network import TINY
from MedDiffFMLogic.phantoms import PhantomConfig, make_phantom
from MedDiffFMLogic.progress import Progress
from MedDiffFMLogic.regiondetect import detect_region, region_from_labels, resolve_region
from MedDiffFMLogic.regions import HU_WINDOWS, REGIONS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def phantoms():
    """One phantom per region at 64 x 64 x 48 voxels of 4 mm (the demo's size)."""
    return {r: make_phantom(PhantomConfig(region=r, size=(64, 64, 48), spacing=(4.0, 4.0, 4.0), seed=3))
            for r in REGIONS}


def _sideways(image: sitk.Image) -> sitk.Image:
    """The same physical scan stored with permuted and reversed axes (a sagittal-like stack)."""
    return sitk.Flip(sitk.PermuteAxes(image, [2, 0, 1]), [True, False, True])


def _notes(stream: io.StringIO) -> list[str]:
    return [r["message"] for r in map(json.loads, stream.getvalue().splitlines()) if r["stage"] == "region"]


@pytest.mark.parametrize("region", REGIONS)
def test_each_region_is_detected_from_the_scan_and_from_its_labels(phantoms, region):
    detection = detect_region(phantoms[region].image)
    assert detection.region == region, detection
    assert detection.share(region) > 0.5
    assert region_from_labels(phantoms[region].labels).region == region


def test_the_evidence_names_what_was_found(phantoms):
    chest = detect_region(phantoms["chest"].image)
    assert chest.evidence.startswith("lungs ") and 0.1 < chest.lung_fraction < 0.5
    assert "skull around brain-like tissue" in detect_region(phantoms["head_neck"].image).evidence
    assert detect_region(phantoms["abdomen"].image).lung_fraction < 0.1


@pytest.mark.parametrize("region", ["head_neck", "chest"])
def test_a_permuted_copy_gives_the_same_answer(phantoms, region):
    image = phantoms[region].image
    assert _sideways(image).GetDirection() != image.GetDirection()
    assert detect_region(_sideways(image)) == detect_region(image)


def test_detection_works_on_a_thin_slice_copy_in_well_under_a_second(phantoms):
    """Any spacing: a 1 mm in-plane, 2 mm slice copy (256 x 256 x 96) is looked at on a ~4 mm copy."""
    image = phantoms["chest"].image
    grid = sitk.Image(256, 256, 96, sitk.sitkInt16)
    grid.SetSpacing((1.0, 1.0, 2.0))
    grid.SetOrigin(image.GetOrigin())
    fine = sitk.Resample(sitk.Cast(image, sitk.sitkInt16), grid, sitk.Transform(), sitk.sitkLinear, -1024)
    start = time.perf_counter()
    detection = detect_region(fine)
    assert time.perf_counter() - start < 1.0
    assert detection.region == "chest"


def test_nothing_to_detect_gives_unknown_and_says_so():
    air = sitk.GetImageFromArray(np.full((8, 16, 16), -1000.0, np.float32))
    stream = io.StringIO()
    assert resolve_region("auto", air, progress=Progress("json", stream)) == "unknown"
    assert "could not detect" in _notes(stream)[0]


def test_auto_resolves_and_says_what_was_detected(phantoms):
    stream = io.StringIO()
    assert resolve_region("auto", phantoms["chest"].image, progress=Progress("json", stream)) == "chest"
    (note,) = _notes(stream)
    assert note.startswith("chest (detected: lungs ") and "% of the body" in note


def test_a_region_that_contradicts_the_scan_is_warned_about_and_kept(phantoms):
    with pytest.warns(UserWarning, match=r"--region abdomen, but the scan looks like chest \(lungs"):
        assert resolve_region("abdomen", phantoms["chest"].image) == "abdomen"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_region("chest", phantoms["chest"].image) == "chest"


def test_synthesis_reads_auto_off_the_label_map_or_says_what_it_chose(tmp_path, phantoms, tiny_model_card):
    from MedDiffFMLogic.tasks import synthesize

    labels = ctio.write_image(phantoms["abdomen"].labels, tmp_path / "labels.nrrd")
    stream = io.StringIO()
    assert resolve_region("auto", None, str(labels), Progress("json", stream)) == "abdomen"
    assert _notes(stream)[0].startswith("abdomen (detected from the label map")
    # without a label map there is nothing to detect from: chest, and the note says so
    stream = io.StringIO()
    synthesize.run(synthesize.SynthesizeConfig(size=(16, 16, 16), model=str(tiny_model_card), steps=1, device="cpu"),
                   tmp_path / "out.nrrd", Progress("json", stream))
    assert _notes(stream)[0].startswith("chest (no --anatomy label map")
    assert (tmp_path / "out.nrrd").exists()
    empty = sitk.Image(8, 8, 8, sitk.sitkUInt8)
    with pytest.raises(InputError, match="cannot tell the region from the label map"):
        resolve_region("auto", None, empty)


def test_settings_default_to_auto_for_every_task_and_the_panels(monkeypatch):
    from MedDiffFMLogic.settings.denoise import DenoiseConfig
    from MedDiffFMLogic.settings.inpaint import InpaintConfig

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "MedDiffFM"))
    from MedDiffFMLib.tasks import REGIONS as PANEL_REGIONS, TaskParameters

    assert DenoiseConfig().region == InpaintConfig().region == TaskParameters().region == "auto"
    assert PANEL_REGIONS == ("auto", *REGIONS)


# ------------------------------------------------------------------------------- the case


@pytest.fixture(scope="module")
def base_card(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("models")
    return str(save_model(make_tiny_net(), folder, name="tiny-region", kind="base", architecture=TINY.to_dict(),
                          working_spacing=(4.0, 4.0, 4.0)))


def test_a_lung_nodule_inpainted_with_auto_gets_the_chest_window(tmp_path, base_card):
    """The issue: `--region abdomen` on a lung nodule fills it with soft tissue (the abdomen window
    [-120, 240] HU cannot hold lung). With auto the chest is detected and used everywhere: the result is
    the explicit chest run's, bit for bit; the abdomen run is warned about and stays in its window."""
    from MedDiffFMLogic.tasks import inpaint

    phantom = make_phantom(PhantomConfig(region="chest", size=(32, 32, 24), spacing=(4.0, 4.0, 4.0), lesions=1,
                                         seed=3, lesion_radius_mm=(8.0, 10.0)))
    ct = ctio.write_image(phantom.image, tmp_path / "ct.nrrd")
    mask = ctio.write_image(phantom.lesion_mask, tmp_path / "mask.nrrd")
    inside = ctio.to_array(phantom.lesion_mask) > 0
    results = {}
    for region in ("auto", "chest", "abdomen"):
        config = inpaint.InpaintConfig(model=base_card, region=region, steps=2, jump_length=2, resamplings=1, seed=2)
        stream = io.StringIO()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = inpaint.run(config, ct, mask, tmp_path / f"{region}.nrrd", progress=Progress("json", stream))
        results[region] = ctio.to_array(ctio.read_ct(out["image"]))[inside]
        contradiction = [w for w in caught if "looks like chest" in str(w.message)]
        assert bool(contradiction) == (region == "abdomen")
        assert _notes(stream)[0].startswith({"auto": "chest (detected", "chest": "chest (given",
                                             "abdomen": "abdomen (given"}[region])
    np.testing.assert_array_equal(results["auto"], results["chest"])
    low, high = HU_WINDOWS["abdomen"]
    assert results["abdomen"].min() >= low - 1 and results["abdomen"].max() <= high + 1
    assert results["auto"].min() < low  # lung-range values: the chest window, not the abdomen's


# ------------------------------------------------------------------------------- real scans (when installed)


def test_the_real_abdomen_slice_is_abdomen():
    """pydicom-data's abdominal CT slice (512 x 512, 0.86 mm): one slice, no lungs, 600 cm2 of body."""
    import importlib.util

    spec = importlib.util.find_spec("data_store")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "explicit_VR-UN.dcm" if spec else None
    if path is None or not path.is_file():
        pytest.skip("pydicom-data is not installed (pip install pydicom-data)")
    detection = detect_region(sitk.ReadImage(str(path)))
    assert detection.region == "abdomen" and detection.lung_fraction < 0.05


def test_the_real_head_is_head_and_neck():
    """InVesalius' Cranium (GPL, read at run time; apt-get install invesalius-examples): a head stored
    as 108 coronal slices, cut at the face by its field of view; given its true axes it is looked at
    axially, and the skull around the brain is found despite the cut."""
    import plistlib
    import tarfile

    cranium = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
    if not cranium.is_file():
        pytest.skip(f"{cranium} missing (apt-get install invesalius-examples)")
    with tarfile.open(cranium) as tar:
        members = {Path(m.name).name: m for m in tar.getmembers()}
        meta = plistlib.loads(tar.extractfile(members["main.plist"]).read())
        raw = tar.extractfile(members["matrix.dat"]).read()
    volume = np.frombuffer(raw, dtype="<i2").reshape(tuple(meta["matrix"]["shape"]))
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing([float(s) for s in meta["spacing"]])
    image.SetDirection((1, 0, 0, 0, 0, 1, 0, -1, 0))  # rows run from the vertex down, slices front to back
    detection = detect_region(image)
    assert detection.region == "head_neck" and "skull around brain-like tissue" in detection.evidence


def test_synthesis_with_a_region_its_label_map_contradicts_warns(phantoms):
    with pytest.warns(UserWarning, match=r"--region head_neck, but the label map looks like abdomen"):
        assert resolve_region("head_neck", None, phantoms["abdomen"].labels) == "head_neck"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_region("abdomen", None, phantoms["abdomen"].labels) == "abdomen"
        assert resolve_region("chest", None, None) == "chest"  # nothing to check it against


def test_a_field_of_view_that_cuts_the_lungs_is_still_a_chest():
    # a 240 mm field of view through an adult chest: the lungs reach the image border, yet they are lungs
    from MedDiffFMLogic.anatomy import label_index

    cut = make_phantom(PhantomConfig(region="chest", size=(48, 48, 16), spacing=(5.0, 5.0, 5.0), seed=10001,
                                     patient_scale=1.0))
    lungs = np.isin(sitk.GetArrayFromImage(cut.labels)[:, :, [0, -1]], [label_index(n) for n in (
        "lung_upper_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_left",
        "lung_lower_lobe_right")])
    assert lungs.any()  # the premise: lung on the image border
    assert detect_region(cut.image).region == "chest"
