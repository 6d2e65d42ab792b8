"""What the web app does to its scene, without any UI: open a CT, paint a mask, run a task in the
engine's process, show and export the results. The browser UI (app.py) calls these; so can a test.

Every task goes through MedDiffFMLib's Processor, the Slicer module's own logic: inputs are written to
temporary NRRD files, the engine runs as `python -m MedDiffFMLogic ...` in a child process, and its
outputs come back as new nodes beside the input (never touching it). Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import import_lib

import_lib()

from MedDiffFMLib import bridge, jobs, models, runner  # noqa: E402
from MedDiffFMLib.tasks import TASKS, TaskParameters  # noqa: E402

VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
MASK_SEGMENT = "lesion"
HEATMAP_OPACITY = 0.7
HEATMAP_SHOWN_ABOVE = 0.9  # the heat map's top 10 % of voxels show in colour over the CT


class SessionError(ValueError):
    """Something the user asked cannot be done; the message says what to do instead."""


@dataclass
class ResultItem:
    node_id: str
    name: str
    kind: str  # "volume", "heatmap" or "segmentation"
    task: str


def _stem(name: str) -> str:
    lower = name.lower()
    for ext in (".seg.nrrd", *VOLUME_EXTENSIONS, ".dcm"):
        if lower.endswith(ext):
            return name[: -len(ext)]
    return name


class Session:
    """One browser session's scene: the trame-slicer SlicerApp, the Processor on its scene, the
    running job and the results. `python` runs the engine (default: this interpreter)."""

    def __init__(self, slicer_app, python: str | None = None, temp_root: str | None = None):
        self.app = slicer_app
        self.scene = slicer_app.scene
        self.processor = jobs.Processor(self.scene, python=python, temp_root=temp_root)
        self.job: jobs.Job | None = None
        self.job_task: str | None = None
        self.input_node = None
        self.results: list[ResultItem] = []
        self._mask_reference: dict[str, str] = {}  # segmentation id -> the volume it was painted on

    # ------------------------------------------------------------------------------ opening a CT

    def open_path(self, path: str | os.PathLike):
        """Load a volume file (NIfTI, NRRD, MHA) or a DICOM folder (one series) and show it."""
        p = Path(str(path)).expanduser()
        if not str(path).strip():
            raise SessionError("type the path of a CT file (.nii.gz, .nrrd, .mha) or of a DICOM folder")
        if p.is_dir():
            files = sorted(str(f) for f in p.iterdir() if f.is_file())
            if not files:
                raise SessionError(f"the folder {p} holds no files; choose a DICOM series folder")
            return self._show_input(self._load_dicom(files, p.name))
        if not p.is_file():
            raise SessionError(f"{p} does not exist on the server; check the path (it is the server's disk)")
        if p.name.lower().endswith(VOLUME_EXTENSIONS):
            return self._show_input(self._load_file(p))
        return self._show_input(self._load_dicom([str(p)], _stem(p.name)))

    def open_files(self, paths: list[str]):
        """Load uploaded files: one volume file, or the files of one DICOM series."""
        if not paths:
            raise SessionError("no file was uploaded")
        if len(paths) == 1 and paths[0].lower().endswith(VOLUME_EXTENSIONS):
            return self._show_input(self._load_file(Path(paths[0])))
        return self._show_input(self._load_dicom(sorted(paths), "DICOM"))

    def _load_file(self, path: Path):
        try:
            return jobs.load_volume(self.scene, path, _stem(path.name))
        except bridge.BridgeError as exc:
            raise SessionError(f"could not read {path.name}: is it a CT volume (.nii.gz, .nrrd, .mha)?") from exc

    def _load_dicom(self, files: list[str], name: str):
        nodes = self.app.io_manager.load_volumes(files)
        if not nodes:
            raise SessionError(f"no DICOM image series could be read from {name}; choose a CT series folder")
        for extra in nodes[1:]:  # one series is the input; the others stay in the scene to choose from
            extra.SetName(bridge.unique_name(self.scene, extra.GetName()))
        return nodes[0]

    def _show_input(self, node):
        bridge.check_input_volume(node)
        display = node.GetDisplayNode()
        if display is None:
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
        self.input_node = node
        self.show_volume(node, reset=True)
        return node

    # ------------------------------------------------------------------------------------ nodes

    def node(self, node_id: str | None):
        return self.scene.GetNodeByID(node_id) if node_id else None

    def _nodes(self, class_name: str) -> list:
        collection = self.scene.GetNodesByClass(class_name)
        return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]

    def volumes(self) -> list:
        return [n for n in self._nodes("vtkMRMLScalarVolumeNode") if not n.IsA("vtkMRMLLabelMapVolumeNode")
                and not n.GetHideFromEditors()]

    def segmentations(self) -> list:
        return [n for n in self._nodes("vtkMRMLSegmentationNode") if not n.GetHideFromEditors()]

    def set_input(self, node_id: str) -> None:
        node = self.node(node_id)
        if node is None:
            raise SessionError("choose a volume")
        self._show_input(node)

    # ---------------------------------------------------------------------------------- display

    def show_volume(self, node, reset: bool = False, in_3d: bool = True) -> None:
        dm = self.app.display_manager
        if in_3d:
            dm.show_volume(node, do_reset_views=reset)
        else:
            dm.show_volume_in_slice_background(node)
            dm.show_volume_in_slice_foreground(None)
            if reset:
                dm.reset_views()

    def show_overlay(self, background, foreground, opacity: float = HEATMAP_OPACITY) -> None:
        dm = self.app.display_manager
        dm.show_volume_in_slice_background(background)
        dm.show_volume_in_slice_foreground(foreground)
        for view in self.app.view_manager.get_slice_views():
            view.set_foreground_opacity(opacity)

    @staticmethod
    def threshold_heatmap(node, quantile: float = HEATMAP_SHOWN_ABOVE) -> None:
        """Show only the map's highest values over the CT: voxels below the quantile are transparent,
        so the anatomy stays readable under the colours."""
        display = node.GetDisplayNode()
        array = bridge.voxels(node)
        if display is None or array.size == 0:
            return
        display.SetLowerThreshold(float(np.quantile(array, quantile)))
        display.SetUpperThreshold(float(array.max()))
        display.SetApplyThreshold(1)

    def show_result(self, item: ResultItem) -> None:
        node = self.node(item.node_id)
        if node is None:
            return
        if item.kind == "volume":
            self.show_volume(node, in_3d=False)
        elif item.kind == "heatmap":
            self.threshold_heatmap(node)
            self.show_overlay(self.input_node, node)
        elif item.kind == "segmentation":
            node.SetDisplayVisibility(True)
        if item.kind != "segmentation":
            for view in self.app.view_manager.get_slice_views():
                view.fit_view_to_content()  # a result on another grid (super-resolution, synthesis) fills the view
        for view in self.app.view_manager.get_views():
            view.schedule_render()  # every view, also those the mouse is not over

    # ---------------------------------------------------------------------------------- masks

    def new_mask(self, name: str = "") -> object:
        """A new segmentation with one empty "lesion" segment on the input's grid, made the segment
        editor's active segmentation (paint it next)."""
        if self.input_node is None:
            raise SessionError("open a CT first: the mask is painted on it")
        editor = self.app.segmentation_editor
        segmentation = editor.create_empty_segmentation_node()
        segmentation.SetName(bridge.unique_name(self.scene, name or f"{self.input_node.GetName()} mask"))
        editor.set_active_segmentation(segmentation, self.input_node)
        editor.add_empty_segment(segment_name=MASK_SEGMENT, segment_color=[0.9, 0.2, 0.2])
        editor.set_surface_representation_enabled(False)
        self._mask_reference[segmentation.GetID()] = self.input_node.GetID()
        return segmentation

    def edit_mask(self, segmentation_id: str) -> None:
        segmentation = self.node(segmentation_id)
        if segmentation is None or self.input_node is None:
            raise SessionError("choose a mask segmentation and open a CT")
        editor = self.app.segmentation_editor
        if editor.active_segmentation_node is not segmentation:
            editor.set_active_segmentation(segmentation, self.input_node)
            editor.set_surface_representation_enabled(False)

    def set_brush(self, mode: str, diameter_percent: float = 8.0) -> None:
        """mode "paint", "erase" or "none" (stop editing, the views navigate again); the brush
        diameter is a percentage of the view's size."""
        from trame_slicer.segmentation import BrushDiameterMode, SegmentationEffectErase, SegmentationEffectPaint

        editor = self.app.segmentation_editor
        if mode == "none" or editor.active_segmentation_node is None:
            editor.deactivate_effect()
            return
        effect_type = SegmentationEffectPaint if mode == "paint" else SegmentationEffectErase
        effect = editor.set_active_effect_type(effect_type)
        if effect is not None:
            effect.set_brush_diameter(float(diameter_percent), BrushDiameterMode.ScreenRelative)

    def first_segment(self, segmentation) -> str:
        ids = bridge.segment_ids(segmentation) if segmentation is not None else []
        return ids[0] if ids else ""

    def mask_reference(self, segmentation):
        ref = segmentation.GetNodeReference("referenceImageGeometryRef")
        if ref is None:
            ref = self.node(self._mask_reference.get(segmentation.GetID(), ""))
        return ref if ref is not None else self.input_node

    # ------------------------------------------------------------------------------------- tasks

    def start(self, task: str, params: TaskParameters, mask_id: str = "", anatomy_id: str = "") -> jobs.Job:
        if self.job is not None:
            raise SessionError("a task is running: wait for it or cancel it")
        if task not in TASKS:
            raise SessionError(f"unknown task {task!r}")
        info = TASKS[task]
        self.app.segmentation_editor.deactivate_effect()  # painting during a run would change nothing
        segment = None
        if info.segment:
            segmentation = self.node(mask_id)
            if segmentation is not None:
                segment = (segmentation, self.first_segment(segmentation))
            elif info.segment == "mask":
                raise SessionError(f"{info.title} needs a lesion mask: click 'New mask' and paint it in a slice view")
        anatomy = self.node(anatomy_id) if task == "synthesize" else None
        inputs = jobs.Inputs(volume=self.input_node if info.needs_volume else None, segment=segment, anatomy=anatomy)
        if info.needs_volume and self.input_node is None:
            raise SessionError("open a CT first")
        self.job = self.processor.start(task, params, inputs)
        self.job_task = task
        return self.job

    def finish(self) -> list[ResultItem]:
        """The finished job's outputs as nodes (raises runner.EngineError or runner.Cancelled)."""
        job, task = self.job, self.job_task
        self.job = self.job_task = None
        result = job.finish()
        items = []
        for out, node in zip([o for o in TASKS[task].outputs], result.nodes):
            items.append(ResultItem(node.GetID(), node.GetName(), out.kind, task))
        self.results += items
        for item in items:
            self.show_result(item)
        return items

    def cancel(self) -> None:
        job = self.job
        self.job = self.job_task = None
        if job is not None:
            job.cancel()

    # ------------------------------------------------------------------------------------ export

    def export(self, node_id: str) -> tuple[str, bytes]:
        """A node as a file to download: volumes as .nrrd (geometry kept), segmentations as .seg.nrrd."""
        node = self.node(node_id)
        if node is None or not (node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLSegmentationNode")):
            raise SessionError(f"no volume or segmentation {node_id!r} in the scene")
        extension = ".seg.nrrd" if node.IsA("vtkMRMLSegmentationNode") else ".nrrd"
        filename = "".join(c if c.isalnum() or c in "-_." else "_" for c in node.GetName()) + extension
        with tempfile.TemporaryDirectory(prefix="MedDiffFM-web-") as folder:
            path = os.path.join(folder, filename)
            jobs.save_node(node, path)
            return filename, Path(path).read_bytes()

    # ------------------------------------------------------------------------------ description

    def describe(self) -> dict:
        """The scene as plain data: what a test (or a curious user) checks from outside the process."""
        volumes = []
        for node in self.volumes():
            entry = {"id": node.GetID(), "name": node.GetName(), "class": node.GetClassName()}
            if node.GetImageData() is not None:
                array = bridge.voxels(node)
                entry.update(dimensions=list(bridge.dimensions(node)),
                             ijk_to_ras=bridge.ijk_to_ras(node).tolist(),
                             sha256=hashlib.sha256(array.tobytes()).hexdigest(),
                             min=float(array.min()), max=float(array.max()),
                             mean=float(array.mean()), std=float(array.std()))
            display = node.GetDisplayNode()
            if display is not None:
                entry["color"] = display.GetColorNodeID()
            volumes.append(entry)
        segmentations = []
        for node in self.segmentations():
            reference = self.mask_reference(node)
            segments = []
            for sid in bridge.segment_ids(node):
                count = None
                if reference is not None:
                    try:
                        count = int(bridge.segment_mask(node, sid, reference).sum())
                    except bridge.BridgeError:
                        count = None
                segments.append({"id": sid, "name": node.GetSegmentation().GetSegment(sid).GetName(),
                                 "voxels": count})
            segmentations.append({"id": node.GetID(), "name": node.GetName(), "segments": segments,
                                  "reference": reference.GetID() if reference is not None else None})
        views = {}
        for view in self.app.view_manager.get_slice_views():
            views[view.get_view_node_id()] = {"background": view.get_background_volume_id(),
                                              "foreground": view.get_foreground_volume_id()}
        return {
            "input": self.input_node.GetID() if self.input_node is not None else None,
            "volumes": volumes,
            "segmentations": segmentations,
            "results": [{"id": r.node_id, "name": r.name, "kind": r.kind, "task": r.task} for r in self.results],
            "slice_views": views,
            "running": self.job is not None,
            "torch_imported": "torch" in sys.modules,
        }


def model_choices(engine_root) -> tuple[list[dict], dict[str, str], list[dict]]:
    """The base models for the model selector and each one's card as HTML (value "" = the engine's
    default, shown with the bundled base model's card as in the Slicer module)."""
    try:
        cards = models.list_cards(engine_root)
    except (OSError, runner.EngineError):
        cards = []
    base = [c for c in cards if c.kind == "base"]
    items = [{"title": "Default (the engine's)", "value": ""}] + [{"title": c.name, "value": str(c.path)} for c in base]
    default = next((c for c in base if c.name == "meddifffm-base-demo"), None)
    html = {"": models.card_html(default)}
    html.update({str(c.path): models.card_html(c) for c in base})
    controlnets = [{"title": "Default (the engine's)", "value": ""}] + [
        {"title": f"{c.name} ({c.task})", "value": str(c.path)} for c in cards if c.kind != "base"]
    return items, html, controlnets

