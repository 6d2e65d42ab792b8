"""The MRML bridge: Slicer nodes to files the engine reads, and the engine's files back to new nodes.

Geometry: Slicer keeps a volume as voxels plus an IJK-to-RAS matrix; NRRD files and the engine
(SimpleITK) use LPS. Slicer's own storage nodes do the RAS <-> LPS flip (x and y negated) when they
write and read, so the bridge writes and reads through them and never converts by hand; the tests
check the files against diag(-1, -1, 1) @ IJK-to-RAS with SimpleITK.

Everything here takes the MRML scene as an argument and uses only classes that exist both in the
Slicer application and in slicer-core (PyPI): no slicer.app, slicer.modules, slicer.mrmlScene or qt.

A run must leave the scene exactly as it was when it fails, so nothing is added to the scene until
every output has been read: result nodes are built outside the scene and added together at the end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

# Geometry read back from a file counts as the input's own when every matrix entry is this close (mm):
# the file stores decimal text, and an exact copy of the input's matrix is better than 1e-15 noise.
SAME_GEOMETRY_TOLERANCE = 1e-4
# Preferred colour tables for heat maps, first found wins (Inferno ships with the Slicer app as a file
# table; the PET tables are procedural and exist in slicer-core too).
HEATMAP_COLOR_IDS = (
    "vtkMRMLColorTableNodeFileInferno.txt",
    "vtkMRMLPETProceduralColorNodePET-Heat",
    "vtkMRMLColorTableNodeIron",
)


class BridgeError(ValueError):
    """A node cannot be handed to the engine or its output cannot be read back; the message is for users."""


# ------------------------------------------------------------------------------------------ geometry


def ijk_to_ras(node) -> np.ndarray:
    """The node's 4x4 IJK-to-RAS matrix as a numpy array."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def set_ijk_to_ras(node, array: np.ndarray) -> None:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    node.SetIJKToRASMatrix(matrix)


def copy_geometry(target, source) -> None:
    """Give target the source's exact geometry. Slicer stores spacing, origin and directions separately
    and composes IJK-to-RAS from them, so copying the parts (not the composed matrix) is bit-exact."""
    directions = vtk.vtkMatrix4x4()
    source.GetIJKToRASDirectionMatrix(directions)
    target.SetSpacing(source.GetSpacing())
    target.SetOrigin(source.GetOrigin())
    # The setter ignores changes within a rounding tolerance; going through the identity makes it copy.
    target.SetIJKToRASDirectionMatrix(vtk.vtkMatrix4x4())
    target.SetIJKToRASDirectionMatrix(directions)


def ras_to_lps(matrix: np.ndarray) -> np.ndarray:
    """The same 4x4 geometry in LPS (what NRRD and SimpleITK store): x and y negated."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ matrix


def dimensions(node) -> tuple[int, int, int]:
    image = node.GetImageData()
    return tuple(image.GetDimensions()) if image is not None else (0, 0, 0)


def same_geometry(a, b, tolerance: float = SAME_GEOMETRY_TOLERANCE) -> bool:
    return dimensions(a) == dimensions(b) and bool(np.allclose(ijk_to_ras(a), ijk_to_ras(b), rtol=0, atol=tolerance))


def voxels(node) -> np.ndarray:
    """A copy of the node's voxels as a (k, j, i) array (Slicer's arrayFromVolume order)."""
    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise BridgeError(f"the volume {node.GetName()!r} holds no image data")
    i, j, k = image.GetDimensions()
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    shape = (k, j, i) if scalars.ndim == 1 else (k, j, i, scalars.shape[1])
    return np.array(scalars, copy=True).reshape(shape)


# ------------------------------------------------------------------------------------------- writing


def check_input_volume(node) -> None:
    """Refuse what the engine cannot take: no node, no voxels, several components, a 2D image."""
    if node is None:
        raise BridgeError("choose an input volume")
    if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise BridgeError(f"{node.GetName()!r} is not a scalar (grey-level) volume; choose a CT volume")
    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise BridgeError(f"the volume {node.GetName()!r} holds no image data")
    if image.GetNumberOfScalarComponents() != 1:
        raise BridgeError(f"{node.GetName()!r} has {image.GetNumberOfScalarComponents()} components per voxel; "
                          "the engine needs a single-component CT")
    if min(image.GetDimensions()) < 2:
        raise BridgeError(f"{node.GetName()!r} is {image.GetDimensions()} voxels: the engine needs a 3D volume")


def write_volume(node, path: str | os.PathLike, compress: bool = False) -> str:
    """Write a volume node's voxels and IJK-to-RAS (its own frame, without any parent transform) to a
    NRRD or NIfTI file through a storage node that is never added to the scene."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(1 if compress else 0)
    if not storage.WriteData(node):
        raise BridgeError(f"could not write {node.GetName()!r} to {path}")
    return str(path)


def _oriented_image_to_numpy(image) -> np.ndarray:
    i, j, k = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i)


def _linear_transform_between(source, target) -> vtk.vtkMatrix4x4:
    """World-to-world matrix from the frame of `source`'s parent transform to `target`'s."""
    matrix = vtk.vtkMatrix4x4()
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
            source.GetParentTransformNode(), target.GetParentTransformNode(), matrix):
        raise BridgeError(
            f"{source.GetName()!r} and {target.GetName()!r} are under different non-linear transforms; "
            "harden the transforms (Data module, right-click, Harden transform) and try again"
        )
    return matrix


def segment_mask(segmentation_node, segment_id: str, reference_volume) -> np.ndarray:
    """The segment as a (k, j, i) uint8 0/1 array on the reference volume's grid (nearest neighbour)."""
    segmentation = segmentation_node.GetSegmentation()
    if not segment_id or segmentation.GetSegment(segment_id) is None:
        raise BridgeError(f"the segmentation {segmentation_node.GetName()!r} has no segment {segment_id!r}; "
                          "choose a segment (draw one with the Segment Editor)")
    labelmap = slicer.vtkOrientedImageData()
    # In the segmentation's own frame (applyParentTransform off); the volume's frame comes next.
    if not slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
            segmentation_node, segment_id, labelmap, False):
        raise BridgeError(f"could not get the voxels of segment {segment_id!r}; "
                          "is its binary labelmap representation present?")
    # Bring the segment into the volume's frame when the two sit under different parent transforms.
    to_volume = _linear_transform_between(segmentation_node, reference_volume)
    if not all(to_volume.GetElement(r, c) == (1.0 if r == c else 0.0) for r in range(4) for c in range(4)):
        image_to_world = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(image_to_world)
        moved = vtk.vtkMatrix4x4()
        vtk.vtkMatrix4x4.Multiply4x4(to_volume, image_to_world, moved)
        labelmap.SetImageToWorldMatrix(moved)
    reference = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(reference_volume)
    resampled = slicer.vtkOrientedImageData()
    if labelmap.IsEmpty():
        shape = tuple(reversed(dimensions(reference_volume)))
        return np.zeros(shape, np.uint8)
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            labelmap, reference, resampled, False, True):
        raise BridgeError(f"could not resample segment {segment_id!r} onto {reference_volume.GetName()!r}")
    # Segments share labelmap layers: this segment is the voxels holding its own label value.
    value = segmentation.GetSegment(segment_id).GetLabelValue()
    return (_oriented_image_to_numpy(resampled) == value).astype(np.uint8)


def write_labelmap(array: np.ndarray, reference_volume, path: str | os.PathLike) -> str:
    """Write a (k, j, i) integer array on the reference volume's grid as a label map file."""
    array = np.ascontiguousarray(array)
    if array.shape != tuple(reversed(dimensions(reference_volume))):
        raise BridgeError(f"label map shape {array.shape} does not match {reference_volume.GetName()!r}")
    node = slicer.vtkMRMLLabelMapVolumeNode()
    node.SetName("mask")
    node.SetAndObserveImageData(_image_data(array))
    copy_geometry(node, reference_volume)
    return write_volume(node, path)


def _image_data(array: np.ndarray) -> vtk.vtkImageData:
    image = vtk.vtkImageData()
    k, j, i = array.shape
    image.SetDimensions(i, j, k)
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    return image


def write_segment(segmentation_node, segment_id: str, reference_volume, path: str | os.PathLike) -> str:
    """A segment as a binary (0/1) label map file on the reference volume's grid; an empty segment is
    refused here, where the user can still fix it, rather than by the engine."""
    mask = segment_mask(segmentation_node, segment_id, reference_volume)
    if not mask.any():
        name = segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
        raise BridgeError(f"the segment {name!r} covers no voxel of {reference_volume.GetName()!r}; "
                          "draw it with the Segment Editor on this volume")
    return write_labelmap(mask, reference_volume, path)


def segment_ids(segmentation_node) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def write_anatomy(segmentation_node, reference_volume, label_of: Callable[[str], int],
                  path: str | os.PathLike) -> str:
    """An organ label map for the anatomy condition: each segment painted with the label its name maps
    to (TotalSegmentator class names, e.g. "liver" -> 5); later segments win where segments overlap."""
    shape = tuple(reversed(dimensions(reference_volume)))
    labels = np.zeros(shape, np.uint8)
    ids = segment_ids(segmentation_node)
    if not ids:
        raise BridgeError(f"the anatomy segmentation {segmentation_node.GetName()!r} has no segments")
    for sid in ids:
        name = segmentation_node.GetSegmentation().GetSegment(sid).GetName()
        try:
            value = int(label_of(_class_name(name)))
        except Exception as exc:  # the engine's vocabulary says what is wrong with the name
            raise BridgeError(f"anatomy segment {name!r}: {exc}") from exc
        labels[segment_mask(segmentation_node, sid, reference_volume) > 0] = value
    return write_labelmap(labels, reference_volume, path)


def _class_name(segment_name: str) -> str:
    """Segment names as TotalSegmentator's Slicer extension writes them ("kidney right") -> class names."""
    return segment_name.strip().lower().replace(" ", "_").replace("-", "_")


def reference_volume_for_segmentation(segmentation_node):
    """A volume node (outside the scene) on the segmentation's reference geometry: the grid of a
    synthesis that follows an anatomy segmentation when no input volume is given."""
    geometry = segmentation_node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    image = slicer.vtkOrientedImageData()
    if not geometry or not slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, image, False) \
            or image.GetExtent()[1] < image.GetExtent()[0]:
        raise BridgeError(f"the segmentation {segmentation_node.GetName()!r} has no reference geometry; "
                          "choose an input volume, or set the geometry in the Segment Editor (Specify geometry)")
    extent = image.GetExtent()
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName(segmentation_node.GetName())
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    # Fold the extent's start into the origin so the volume's voxel (0, 0, 0) is the extent's first.
    shift = vtk.vtkMatrix4x4()
    for axis in range(3):
        shift.SetElement(axis, 3, extent[2 * axis])
    moved = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Multiply4x4(matrix, shift, moved)
    node.SetIJKToRASMatrix(moved)
    size = [extent[2 * a + 1] - extent[2 * a] + 1 for a in range(3)]
    node.SetAndObserveImageData(_image_data(np.zeros(tuple(reversed(size)), np.uint8)))
    return node


# ------------------------------------------------------------------------------------------- reading


def read_volume(path: str | os.PathLike, labelmap: bool = False):
    """A new volume node, not in any scene, holding the file's voxels and geometry."""
    node = slicer.vtkMRMLLabelMapVolumeNode() if labelmap else slicer.vtkMRMLScalarVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetSingleFile(1)  # one file, never a series guessed from neighbouring names
    if not os.path.isfile(path) or not storage.ReadData(node) or node.GetImageData() is None:
        raise BridgeError(f"could not read the engine's output {path}")
    return node


def snap_geometry(node, reference) -> None:
    """Give a result the reference's exact IJK-to-RAS when it lies on the reference's grid (the file
    round trip would otherwise leave ~1e-15 of decimal noise)."""
    if reference is not None and same_geometry(node, reference):
        copy_geometry(node, reference)


def _matrix(node) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


def segmentation_from_labelmap(labelmap_node, reference_volume, segment_name: str, color=(1.0, 0.9, 0.1)):
    """A new segmentation node (not in a scene) with one segment per label of the label map, the input
    volume as its reference geometry, and an empty segment named `segment_name` when nothing is
    labelled, so that "no anomaly found" still shows as a result.

    The segments are built directly (vtkSegment + binary labelmap) rather than through the module
    logic's import, which wants the node in a scene already."""
    segmentation_node = slicer.vtkMRMLSegmentationNode()
    if reference_volume is not None:
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    segmentation = segmentation_node.GetSegmentation()
    labels = voxels(labelmap_node)
    values = [int(v) for v in np.unique(labels) if v != 0]
    geometry = vtk.vtkMatrix4x4()
    labelmap_node.GetIJKToRASMatrix(geometry)
    representation = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    for value in values or [None]:
        image = slicer.vtkOrientedImageData()
        image.ShallowCopy(_image_data((labels == value).astype(np.uint8) if value is not None
                                      else np.zeros(labels.shape, np.uint8)))
        image.SetImageToWorldMatrix(geometry)
        segment = slicer.vtkSegment()
        segment.SetName(segment_name if len(values) <= 1 else f"{segment_name} {value}")
        segment.SetColor(*color)
        segment.AddRepresentation(representation, image)
        segmentation.AddSegment(segment)
    return segmentation_node


# ------------------------------------------------------------------------------------ into the scene


@dataclass
class Placed:
    node: object  # the node now in the scene
    kind: str  # "volume", "heatmap" or "segmentation"


def unique_name(scene, name: str) -> str:
    """`name` itself when free in the scene, else Slicer's "name_1", "name_2" ..."""
    return name if scene.GetFirstNodeByName(name) is None else scene.GenerateUniqueName(name)


def _subject_hierarchy(scene):
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


def place_beside(scene, node, reference) -> None:
    """Put `node` in the reference's Subject Hierarchy folder (its study), under the same transform."""
    if reference is not None and reference.GetParentTransformNode() is not None:
        node.SetAndObserveTransformNodeID(reference.GetParentTransformNode().GetID())
    sh = _subject_hierarchy(scene)
    if sh is None:
        return
    parent = sh.GetSceneItemID()
    if reference is not None:
        ref_item = sh.GetItemByDataNode(reference)
        if ref_item:
            parent = sh.GetItemParent(ref_item)
    item = sh.GetItemByDataNode(node)
    if item:  # the Slicer app's subject hierarchy plugins make an item as soon as the node is added
        sh.SetItemParent(item, parent)
    else:
        sh.CreateItem(parent, node)


def heatmap_color_id(scene) -> str | None:
    for color_id in HEATMAP_COLOR_IDS:
        if scene.GetNodeByID(color_id) is not None:
            return color_id
    return None


def heatmap_window(array: np.ndarray) -> tuple[float, float]:
    """A display range that shows the anomalies: from 0 (no difference) to the 99.5th percentile of the
    positive part of the map (its largest values are a few voxels and would wash out the rest)."""
    positive = np.abs(array[np.isfinite(array)])
    positive = positive[positive > 0]
    if positive.size == 0:
        return 0.0, 1.0
    high = float(np.percentile(positive, 99.5))
    return 0.0, high if high > 0 else float(positive.max())


def add_to_scene(scene, node, kind: str, name: str, reference=None) -> Placed:
    """Add a result node built outside the scene, with its display, beside the reference."""
    node.SetName(unique_name(scene, name))
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if kind == "volume" and display is not None:
        ref_display = reference.GetDisplayNode() if reference is not None and reference.IsA("vtkMRMLScalarVolumeNode") else None
        if ref_display is not None:
            # The input's window (e.g. a CT preset) suits a result in the same units.
            display.SetAutoWindowLevel(0)
            display.SetWindowLevel(ref_display.GetWindow(), ref_display.GetLevel())
            if ref_display.GetColorNodeID():
                display.SetAndObserveColorNodeID(ref_display.GetColorNodeID())
        else:
            display.SetAutoWindowLevel(1)
    elif kind == "heatmap" and display is not None:
        color_id = heatmap_color_id(scene)
        if color_id:
            display.SetAndObserveColorNodeID(color_id)
        low, high = heatmap_window(voxels(node))
        display.SetAutoWindowLevel(0)
        display.SetWindowLevelMinMax(low, high)
    place_beside(scene, node, reference)
    return Placed(node, kind)


def replace_volume(target, source) -> None:
    """Put a result's voxels and geometry into an existing node (the user chose it as the output)."""
    image = vtk.vtkImageData()
    image.DeepCopy(source.GetImageData())
    copy_geometry(target, source)
    target.SetAndObserveImageData(image)
    if target.GetScene() is not None and target.GetDisplayNode() is None:
        target.CreateDefaultDisplayNodes()  # a node just made in the output selector has no display yet
    target.Modified()


def scene_snapshot(scene, nodes: Iterable = ()) -> dict:
    """What a failed run must not change: the scene's node IDs and classes, and a digest of the voxels
    of the given volume nodes. Used by the tests and by the module's self-test."""
    ids = []
    for i in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(i)
        ids.append((node.GetID(), node.GetClassName(), node.GetName()))
    import hashlib

    digests = {}
    for node in nodes:
        array = voxels(node)
        digests[node.GetID()] = (array.dtype.str, array.shape, hashlib.sha256(array.tobytes()).hexdigest(),
                                 tuple(ijk_to_ras(node).ravel()))
    return {"nodes": ids, "voxels": digests}


def remove_nodes(scene, nodes: Sequence) -> None:
    """Remove data nodes with their display and storage nodes."""
    for node in nodes:
        if node is None or node.GetScene() is not scene:
            continue
        helpers = []
        if node.IsA("vtkMRMLDisplayableNode"):
            helpers += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        if node.IsA("vtkMRMLStorableNode"):
            helpers += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
        scene.RemoveNode(node)
        for helper in helpers:
            if helper is not None and helper.GetScene() is scene:
                scene.RemoveNode(helper)
