"""The Slicer bridge against slicer-core, the real MRML library: volume and segmentation nodes with an
oblique, anisotropic geometry to files the engine reads, through real engine runs (tiny model, few
steps), and back into new nodes. No fake slicer, vtk or torch modules anywhere."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is needed for the bridge tests")
import vtk  # noqa: E402  (slicer-core's own vtk)

MODULE_DIR = Path(__file__).resolve().parents[1] / "MedDiffFM"
sys.path.insert(0, str(MODULE_DIR))

from MedDiffFMLib import bridge, runner  # noqa: E402
from MedDiffFMLib.jobs import Inputs, Processor  # noqa: E402
from MedDiffFMLib.tasks import TaskParameters  # noqa: E402

SPACING = (3.5, 4.25, 5.0)
ORIGIN = (-41.5, 17.25, 108.0)
ANGLE = 0.4


def rotation() -> np.ndarray:
    """An oblique direction: a rotation about an axis that is no coordinate axis."""
    axis = np.array([1.0, 2.0, 2.0]) / 3.0
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(ANGLE) * k + (1 - np.cos(ANGLE)) * k @ k


def expected_ijk_to_ras(spacing=SPACING, origin=ORIGIN) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotation() * np.asarray(spacing)[None, :]
    m[:3, 3] = origin
    return m


@pytest.fixture
def scene():
    """A scene set up as the Slicer app sets it up, minus Qt: colour tables and subject hierarchy."""
    scene = slicer.vtkMRMLScene()
    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    hierarchy = slicer.vtkSlicerSubjectHierarchyModuleLogic()
    hierarchy.SetMRMLScene(scene)
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()  # registers the representation converters
    segmentations.SetMRMLScene(scene)
    assert slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)  # the app's singleton, made up front
    yield scene
    segmentations.SetMRMLScene(None)
    hierarchy.SetMRMLScene(None)
    colors.SetMRMLScene(None)
    scene.Clear(1)


def phantom_voxels(shape=(12, 20, 18), seed=0) -> np.ndarray:
    """(k, j, i) int16 CT-like voxels: a soft-tissue block in air with noise, different along each axis."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    body = ((j - shape[1] / 2) / (shape[1] / 2.6)) ** 2 + ((i - shape[2] / 2) / (shape[2] / 2.3)) ** 2 < 1
    values = np.where(body, 40 + 3 * k, -1000) + rng.normal(0, 25, shape)
    return np.round(values).astype(np.int16)


def add_volume(scene, array, name="CT", matrix=None, study=True):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetAndObserveImageData(bridge._image_data(array))
    bridge.set_ijk_to_ras(node, expected_ijk_to_ras() if matrix is None else matrix)
    node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().SetAutoWindowLevel(0)
    node.GetDisplayNode().SetWindowLevel(400, 40)
    if study:  # patient/study folders as DICOM import makes them
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "patient")
        study_item = sh.CreateStudyItem(patient, "study")
        item = sh.GetItemByDataNode(node) or sh.CreateItem(study_item, node)
        sh.SetItemParent(item, study_item)
    return node


def add_segmentation(scene, volume, mask, name="lesion"):
    """A segmentation with one segment drawn from a (k, j, i) mask on the volume's grid."""
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    labelmap.SetAndObserveImageData(bridge._image_data(mask.astype(np.uint8)))
    bridge.set_ijk_to_ras(labelmap, bridge.ijk_to_ras(volume))
    image = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(labelmap)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(image, segmentation, name)
    segmentation.GetSegmentation().GetNthSegment(0).SetName(name)  # the import appends the label value
    return segmentation, segmentation.GetSegmentation().GetNthSegmentID(0)


def study_of(scene, node):
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    return sh.GetItemParent(sh.GetItemByDataNode(node))


# ------------------------------------------------------------------------------- geometry to and fro


def test_volume_goes_to_an_lps_file_and_back_with_its_exact_geometry(scene, tmp_path):
    array = phantom_voxels()
    volume = add_volume(scene, array)
    np.testing.assert_allclose(bridge.ijk_to_ras(volume), expected_ijk_to_ras(), atol=1e-12)

    path = bridge.write_volume(volume, tmp_path / "ct.nrrd")
    image = sitk.ReadImage(path)  # what the engine sees: SimpleITK, LPS
    lps = bridge.ras_to_lps(expected_ijk_to_ras())
    np.testing.assert_allclose(image.GetSpacing(), SPACING, atol=1e-9)
    np.testing.assert_allclose(image.GetOrigin(), lps[:3, 3], atol=1e-9)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), lps[:3, :3] / np.asarray(SPACING), atol=1e-9)
    assert image.GetPixelID() == sitk.sitkInt16
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), array)  # (z, y, x) == Slicer's (k, j, i)

    back = bridge.read_volume(path)
    assert back.GetScene() is None  # read outside the scene: nothing appears until a run succeeds
    np.testing.assert_allclose(bridge.ijk_to_ras(back), expected_ijk_to_ras(), atol=1e-9)
    bridge.snap_geometry(back, volume)
    np.testing.assert_array_equal(bridge.ijk_to_ras(back), bridge.ijk_to_ras(volume))
    np.testing.assert_array_equal(bridge.voxels(back), array)


def test_a_segment_becomes_a_binary_mask_on_the_input_grid(scene, tmp_path):
    array = phantom_voxels()
    volume = add_volume(scene, array)
    mask = np.zeros(array.shape, np.uint8)
    mask[4:8, 6:13, 5:11] = 1
    segmentation, segment_id = add_segmentation(scene, volume, mask)
    second = segmentation.GetSegmentation().AddEmptySegment("other")

    np.testing.assert_array_equal(bridge.segment_mask(segmentation, segment_id, volume), mask)
    image = sitk.ReadImage(bridge.write_segment(segmentation, segment_id, volume, tmp_path / "mask.nrrd"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), mask)
    np.testing.assert_allclose(image.GetOrigin(), bridge.ras_to_lps(expected_ijk_to_ras())[:3, 3], atol=1e-9)

    with pytest.raises(bridge.BridgeError, match="covers no voxel"):
        bridge.write_segment(segmentation, second, volume, tmp_path / "empty.nrrd")
    with pytest.raises(bridge.BridgeError, match="no segment"):
        bridge.segment_mask(segmentation, "missing", volume)


def test_a_segment_drawn_on_a_finer_grid_is_resampled_onto_the_input_grid(scene):
    """A segmentation whose own grid is 3x finer (as when it was drawn on another series): the mask
    is taken at the input's voxel centres, each of which is the centre of one fine voxel."""
    array = phantom_voxels()
    volume = add_volume(scene, array)
    fine_matrix = expected_ijk_to_ras()
    fine_matrix[:3, :3] /= 3.0
    fine_matrix[:3, 3] -= fine_matrix[:3, :3] @ np.ones(3)  # fine voxel (1, 1, 1) sits on input voxel (0, 0, 0)
    fine = np.zeros(tuple(3 * n for n in array.shape), np.uint8)
    fine[3 * 4:3 * 8, 3 * 6:3 * 13, 3 * 5:3 * 11] = 1
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "fine")
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    labelmap.SetAndObserveImageData(bridge._image_data(fine))
    bridge.set_ijk_to_ras(labelmap, fine_matrix)
    image = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(labelmap)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(image, segmentation, "lesion")
    expected = np.zeros(array.shape, np.uint8)
    expected[4:8, 6:13, 5:11] = 1
    segment_id = segmentation.GetSegmentation().GetNthSegmentID(0)
    np.testing.assert_array_equal(bridge.segment_mask(segmentation, segment_id, volume), expected)


def test_a_segment_under_a_transform_is_moved_onto_the_volume_grid(scene):
    """The mask is where the user sees the segment: a segmentation under a translation by one voxel
    along i lands one voxel further along i on the volume's grid."""
    array = phantom_voxels()
    volume = add_volume(scene, array)
    mask = np.zeros(array.shape, np.uint8)
    mask[4:8, 6:13, 5:11] = 1
    segmentation, segment_id = add_segmentation(scene, volume, mask)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    step = expected_ijk_to_ras()[:3, 0]  # one voxel along i, in RAS
    for r in range(3):
        shift.SetElement(r, 3, step[r])
    transform.SetMatrixTransformToParent(shift)
    segmentation.SetAndObserveTransformNodeID(transform.GetID())
    moved = bridge.segment_mask(segmentation, segment_id, volume)
    np.testing.assert_array_equal(moved[:, :, 6:12], mask[:, :, 5:11])
    assert moved.sum() == mask.sum()


def test_a_result_label_map_becomes_a_segmentation_beside_the_input(scene, tmp_path):
    array = phantom_voxels()
    volume = add_volume(scene, array, name="Chest CT")
    labels = np.zeros(array.shape, np.uint8)
    labels[2:5, 3:9, 4:10] = 1
    image = sitk.GetImageFromArray(labels)
    lps = bridge.ras_to_lps(expected_ijk_to_ras())
    image.SetSpacing(SPACING)
    image.SetOrigin(lps[:3, 3])
    image.SetDirection((lps[:3, :3] / np.asarray(SPACING)).ravel())
    path = str(tmp_path / "mask.nrrd")
    sitk.WriteImage(image, path)

    labelmap = bridge.read_volume(path, labelmap=True)
    bridge.snap_geometry(labelmap, volume)
    segmentation = bridge.segmentation_from_labelmap(labelmap, volume, "anomaly")
    placed = bridge.add_to_scene(scene, segmentation, "segmentation", "Chest CT anomaly", volume).node

    assert placed.GetScene() is scene and placed.GetName() == "Chest CT anomaly"
    assert placed.GetDisplayNode() is not None
    seg = placed.GetSegmentation()
    assert seg.GetNumberOfSegments() == 1 and seg.GetNthSegment(0).GetName() == "anomaly"
    # The input is the reference geometry: the segment's voxels on that grid are the label map's.
    reference = seg.GetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    assert reference and reference == _reference_geometry_of(volume)
    np.testing.assert_array_equal(bridge.segment_mask(placed, seg.GetNthSegmentID(0), volume), labels)
    assert study_of(scene, placed) == study_of(scene, volume) != 0

    empty = bridge.segmentation_from_labelmap(bridge.read_volume(bridge.write_labelmap(
        np.zeros_like(labels), volume, tmp_path / "none.nrrd"), labelmap=True), volume, "anomaly")
    assert empty.GetSegmentation().GetNumberOfSegments() == 1  # "nothing found" still shows as a result


def _reference_geometry_of(volume) -> str:
    node = slicer.vtkMRMLSegmentationNode()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    return node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())


def test_heat_map_gets_a_colour_table_and_a_window(scene):
    array = phantom_voxels()
    volume = add_volume(scene, array)
    heat = slicer.vtkMRMLScalarVolumeNode()
    values = np.abs(np.random.default_rng(1).normal(0, 10, array.shape)).astype(np.float32)
    heat.SetAndObserveImageData(bridge._image_data(values))
    bridge.set_ijk_to_ras(heat, bridge.ijk_to_ras(volume))
    placed = bridge.add_to_scene(scene, heat, "heatmap", "CT anomaly map", volume).node
    display = placed.GetDisplayNode()
    assert display.GetColorNodeID() == bridge.heatmap_color_id(scene) is not None
    assert not display.GetAutoWindowLevel()
    low, high = bridge.heatmap_window(values)
    assert display.GetWindowLevelMin() == pytest.approx(low) and display.GetWindowLevelMax() == pytest.approx(high)
    assert 0 < high < values.max()


def test_results_follow_the_input_under_its_transform(scene):
    """The engine sees the input in its own frame; its result goes under the input's transform, so
    both show in the same place."""
    volume = add_volume(scene, phantom_voxels())
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    result = slicer.vtkMRMLScalarVolumeNode()
    result.SetAndObserveImageData(bridge._image_data(phantom_voxels(seed=1)))
    bridge.copy_geometry(result, volume)
    placed = bridge.add_to_scene(scene, result, "volume", "CT denoised", volume).node
    assert placed.GetParentTransformNode() is transform
    assert study_of(scene, placed) == study_of(scene, volume)
    again = slicer.vtkMRMLScalarVolumeNode()
    again.SetAndObserveImageData(bridge._image_data(phantom_voxels(seed=2)))
    assert bridge.add_to_scene(scene, again, "volume", "CT denoised", volume).node.GetName() == "CT denoised_1"


# --------------------------------------------------------------------------- through the real engine


def tiny_params(card, **changes) -> TaskParameters:
    return TaskParameters(**{"model": str(card), "device": "cpu", "preset": "fast", "steps": 2, **changes})


def test_denoise_through_the_engine_returns_a_node_on_the_input_grid(scene, tmp_path, tiny_model_card):
    array = phantom_voxels()
    volume = add_volume(scene, array, name="Low-dose CT")
    before = bridge.scene_snapshot(scene, [volume])
    events = []
    processor = Processor(scene)
    # the region the CLI call below gives (the panel's default, auto, detects one from this small volume)
    result = processor.process("denoise", tiny_params(tiny_model_card, noise_level=25.0, region="chest"),
                               Inputs(volume=volume), on_event=events.append)

    [node] = result.nodes
    assert node.GetName() == "Low-dose CT denoised" and node.GetScene() is scene
    np.testing.assert_array_equal(bridge.ijk_to_ras(node), bridge.ijk_to_ras(volume))
    assert study_of(scene, node) == study_of(scene, volume) != 0
    assert node.GetDisplayNode().GetWindow() == 400  # the input's CT window
    assert any(isinstance(e, runner.Progress) and e.stage == "denoise" for e in events)
    # The voxels equal the engine's own output for the same data written independently by SimpleITK
    # in LPS: the bridge neither reorders nor moves anything.
    from MedDiffFMLogic.cli import main

    lps = bridge.ras_to_lps(expected_ijk_to_ras())
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(lps[:3, 3])
    image.SetDirection((lps[:3, :3] / np.asarray(SPACING)).ravel())
    sitk.WriteImage(image, str(tmp_path / "in.nii.gz"))
    assert main(["denoise", str(tmp_path / "in.nii.gz"), "-o", str(tmp_path / "out.nii.gz"), "--model",
                 str(tiny_model_card), "--noise-level", "25.0", "--strength", "1.0", "--steps", "2",
                 "--overlap", "0.125", "--region", "chest", "--device", "cpu", "--seed", "0"]) == 0
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.nii.gz")))
    # Not bit-equal: torch's thread count differs between this process and the engine's, and float
    # sums change in the last bits. A flipped or permuted axis would differ by hundreds of HU.
    np.testing.assert_allclose(bridge.voxels(node), expected, rtol=0, atol=0.1)
    assert not np.array_equal(expected, array.astype(np.float32))  # it did denoise
    # The input is untouched, and the scene grew by the result (and its display) only.
    after = bridge.scene_snapshot(scene, [volume])
    assert after["voxels"] == before["voxels"]
    assert after["nodes"][: len(before["nodes"])] == before["nodes"]


def test_anomaly_map_with_a_region_of_interest_gives_a_heat_map_and_a_segmentation(scene, tiny_model_card):
    array = phantom_voxels()
    volume = add_volume(scene, array, name="CT")
    roi = np.zeros(array.shape, np.uint8)
    roi[2:10, 4:16, 4:14] = 1
    segmentation, segment_id = add_segmentation(scene, volume, roi, "liver")
    result = Processor(scene).process(
        "anomaly", tiny_params(tiny_model_card, threshold=5.0), Inputs(volume=volume, segment=(segmentation, segment_id)))
    heat, mask = result.nodes
    assert heat.GetName() == "CT anomaly map" and mask.GetName() == "CT anomaly"
    np.testing.assert_array_equal(bridge.ijk_to_ras(heat), bridge.ijk_to_ras(volume))
    assert heat.GetDisplayNode().GetColorNodeID() == bridge.heatmap_color_id(scene)
    assert mask.IsA("vtkMRMLSegmentationNode") and mask.GetSegmentation().GetNumberOfSegments() == 1
    values = bridge.voxels(heat)
    assert np.all(values[roi == 0] == 0) and np.any(values[roi == 1] != 0)  # the map stays in the ROI
    found = bridge.segment_mask(mask, mask.GetSegmentation().GetNthSegmentID(0), volume)
    np.testing.assert_array_equal(found > 0, (values > 5.0) & (roi == 1))
    assert study_of(scene, heat) == study_of(scene, mask) == study_of(scene, volume)


def test_inpainting_through_the_bridge_keeps_every_voxel_outside_the_segment(scene, tiny_model_card):
    """The engine's invariant survives the round trip: same voxel type, outside the mask bit for bit."""
    array = phantom_voxels()
    volume = add_volume(scene, array, name="CT")
    mask = np.zeros(array.shape, np.uint8)
    mask[4:8, 6:13, 5:11] = 1
    segmentation, segment_id = add_segmentation(scene, volume, mask)
    [node] = Processor(scene).process("inpaint", tiny_params(tiny_model_card),
                                      Inputs(volume=volume, segment=(segmentation, segment_id))).nodes
    assert node.GetName() == "CT inpainted"
    result = bridge.voxels(node)
    assert result.dtype == array.dtype
    np.testing.assert_array_equal(result[mask == 0], array[mask == 0])
    assert np.any(result[mask == 1] != array[mask == 1])


def test_a_failed_run_shows_the_engine_message_and_leaves_the_scene_as_it_was(scene, tmp_path):
    volume = add_volume(scene, phantom_voxels())
    before = bridge.scene_snapshot(scene, [volume])
    temp = tmp_path / "temp"
    temp.mkdir()
    with pytest.raises(runner.EngineError) as error:
        Processor(scene, temp_root=temp).process(
            "denoise", TaskParameters(model="no-such-model", device="cpu", steps=2), Inputs(volume=volume))
    message = str(error.value)
    assert "no model named 'no-such-model'" in message and "Traceback" not in message
    assert bridge.scene_snapshot(scene, [volume]) == before
    assert not any(temp.iterdir())  # the run's inputs and outputs are gone


def test_cancel_kills_the_engine_and_leaves_the_scene_as_it_was(scene, tiny_model_card, tmp_path):
    psutil = pytest.importorskip("psutil")
    array = phantom_voxels()
    volume = add_volume(scene, array)
    mask = np.zeros(array.shape, np.uint8)
    mask[4:8, 6:13, 5:11] = 1
    segmentation, segment_id = add_segmentation(scene, volume, mask)
    before = bridge.scene_snapshot(scene, [volume])
    temp = tmp_path / "temp"
    temp.mkdir()

    job = Processor(scene, temp_root=temp).start("inpaint", tiny_params(tiny_model_card, steps=400),
                                 Inputs(volume=volume, segment=(segmentation, segment_id)))
    pid = job.process.pid
    assert job.folder and os.path.isdir(job.folder) and Path(job.folder).parent == temp
    # Cancel once sampling has begun: the engine is then deep in its work, with torch loaded.
    deadline = time.monotonic() + 120
    while not (job.last_progress and job.last_progress.stage == "inpaint" and job.last_progress.step >= 1):
        job.poll()
        assert not job.finished, "the engine ended before it could be cancelled"
        assert time.monotonic() < deadline, "no sampling progress within 2 minutes"
        time.sleep(0.05)
    # As the GUI cancels: at once, then the poll timer sees the run end.
    started = time.monotonic()
    job.cancel(wait=False)
    assert time.monotonic() - started < 0.5
    deadline = time.monotonic() + 30
    while not job.finished:
        job.poll()
        assert time.monotonic() < deadline, "the cancelled engine did not end"
        time.sleep(0.05)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not any(temp.iterdir())  # the run's files went with its processes, before finish()
    with pytest.raises(runner.Cancelled):
        job.finish()
    assert bridge.scene_snapshot(scene, [volume]) == before
    assert not any(temp.iterdir())


def test_runs_outside_the_slicer_app_use_the_systems_temporary_folder(scene):
    """slicer-core has no slicer.app; inside the app, runs go to slicer.util.tempDirectory()."""
    from MedDiffFMLib import jobs

    assert jobs.default_temp_root() is None and Processor(scene).temp_root is None


# ------------------------------------------------------------------------------------------ batch


def test_batch_script_runs_a_folder_through_logic_process(scene, tmp_path, tiny_model_card):
    """What `Slicer --no-main-window --python-script Scripts/batch.py ...` runs, with the same
    processing logic: each scan in, its result out with the scan's geometry, a bad file reported and
    skipped, and the scene left as it was."""
    from MedDiffFMLib import batch

    scans, out = tmp_path / "scans", tmp_path / "out"
    scans.mkdir()
    lps = bridge.ras_to_lps(expected_ijk_to_ras())
    image = sitk.GetImageFromArray(phantom_voxels())
    image.SetSpacing(SPACING)
    image.SetOrigin(lps[:3, 3])
    image.SetDirection((lps[:3, :3] / np.asarray(SPACING)).ravel())
    sitk.WriteImage(image, str(scans / "case1.nii.gz"))
    (scans / "broken.nrrd").write_text("not an image")
    (scans / "notes.txt").write_text("ignored: not a scan")
    before = bridge.scene_snapshot(scene)
    lines: list[str] = []
    code = batch.main(["--task", "denoise", "--input", str(scans), "--output", str(out), "--model", str(tiny_model_card),
                       "--steps", "2", "--preset", "fast", "--device", "cpu", "--noise-level", "25"],
                      Processor(scene), log=lines.append)
    assert code == 1  # one case failed, the other still ran
    assert any(line.startswith("broken.nrrd: FAILED: could not read") for line in lines), lines
    assert lines[-1] == "1 of 2 done, 1 failed"
    [written] = sorted(out.iterdir())
    assert written.name == "case1_denoised.nii.gz"
    result = sitk.ReadImage(str(written))
    assert result.GetSize() == image.GetSize()
    np.testing.assert_allclose(result.GetOrigin(), image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(result.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(result.GetSpacing(), image.GetSpacing(), atol=1e-6)
    assert bridge.scene_snapshot(scene)["nodes"] == before["nodes"]


# ------------------------------------------------------------------------------ anatomy, output node


def test_an_anatomy_segmentation_becomes_a_totalsegmentator_label_map_on_its_own_grid(scene, tmp_path):
    """Synthesis that follows an organ segmentation: segment names are TotalSegmentator classes (as the
    TotalSegmentator extension names them), the grid is the segmentation's reference geometry."""
    array = phantom_voxels()
    volume = add_volume(scene, array)
    body = np.zeros(array.shape, np.uint8)
    body[1:11, 2:18, 2:16] = 1
    liver = np.zeros(array.shape, np.uint8)
    liver[3:7, 5:10, 4:9] = 1
    segmentation, _ = add_segmentation(scene, volume, body, "body")
    liver_only = add_segmentation(scene, volume, liver, "Liver")
    segmentation.GetSegmentation().CopySegmentFromSegmentation(liver_only[0].GetSegmentation(), liver_only[1])
    grid = bridge.reference_volume_for_segmentation(segmentation)
    assert grid.GetScene() is None
    np.testing.assert_allclose(bridge.ijk_to_ras(grid), bridge.ijk_to_ras(volume), atol=1e-9)
    assert bridge.dimensions(grid) == bridge.dimensions(volume)

    processor = Processor(scene)
    path = bridge.write_anatomy(segmentation, grid, processor.anatomy_label, tmp_path / "anatomy.nrrd")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(path))
    expected = np.where(liver > 0, 5, np.where(body > 0, 118, 0))  # later segments win: liver over body
    np.testing.assert_array_equal(labels, expected)

    segmentation.GetSegmentation().GetNthSegment(0).SetName("livr")
    with pytest.raises(bridge.BridgeError, match="did you mean 'liver'"):
        bridge.write_anatomy(segmentation, grid, processor.anatomy_label, tmp_path / "bad.nrrd")


def test_a_chosen_output_volume_is_overwritten_and_the_input_never_is(scene, tmp_path):
    array = phantom_voxels()
    volume = add_volume(scene, array)
    target = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "chosen output")
    result = bridge.read_volume(bridge.write_volume(volume, tmp_path / "r.nrrd"))
    bridge.replace_volume(target, result)
    np.testing.assert_array_equal(bridge.voxels(target), array)
    np.testing.assert_array_equal(bridge.ijk_to_ras(target), bridge.ijk_to_ras(result))
    assert target.GetDisplayNode() is not None
    with pytest.raises(bridge.BridgeError, match="input is never changed"):
        Processor(scene).start("denoise", TaskParameters(), Inputs(volume=volume, output_volume=volume))
    with pytest.raises(bridge.BridgeError, match="needs a segment"):
        Processor(scene).start("inpaint", TaskParameters(), Inputs(volume=volume))
