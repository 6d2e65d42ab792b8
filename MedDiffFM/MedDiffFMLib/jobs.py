"""Jobs: one task run from Slicer nodes to Slicer nodes: write the inputs, run the engine in a child
process, read its outputs back as new nodes. (This was logic.py; "Logic" names the engine package and
the Slicer module's logic class, which drives the Processor here.) No qt and no slicer.app here: the scene and the Python that runs
the engine are arguments, so the same code serves the module's GUI (which polls a running job from a
QTimer), the batch script and the pytest suite (slicer-core).

A job touches the scene only in `finish()`, after the engine has succeeded and every output file has
been read, so a failed or cancelled run leaves the scene exactly as it was; its temporary folder is
removed in every case (after a cancel, once the engine's processes are gone).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import bridge, runner
from .tasks import TASKS, TaskParameters, engine_arguments, output_files, result_name

TEMP_PREFIX = "MedDiffFM-"


def default_temp_root() -> str | None:
    """Where runs put their temporary folders: Slicer's temporary folder (Application Settings) inside the
    Slicer app, the system's (None) elsewhere."""
    try:
        import slicer

        slicer.app  # noqa: B018  (slicer-core and PythonSlicer have no app)
        return slicer.util.tempDirectory(key="MedDiffFM", includeDateTime=False)
    except (ImportError, AttributeError):
        return None


@dataclass
class Inputs:
    """The nodes a task reads. `segment` is (segmentation node, segment id): the mask of inpaint and
    lesion, the optional region of interest of the anomaly map."""

    volume: object | None = None
    segment: tuple[object, str] | None = None
    anatomy: object | None = None  # a segmentation whose segment names are TotalSegmentator classes
    output_volume: object | None = None  # an existing node to overwrite with the main result; None: a new node


@dataclass
class Result:
    nodes: list = field(default_factory=list)  # the new (or overwritten) nodes, main result first
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)


class Job:
    """One engine run. start() writes the inputs and starts the engine; poll() gives its events;
    finish() turns its outputs into nodes; cancel() stops it. Cleans its temporary folder itself."""

    def __init__(self, processor: "Processor", task: str, params: TaskParameters, inputs: Inputs):
        if task not in TASKS:
            raise bridge.BridgeError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        params.check(task)
        self.processor, self.task, self.params, self.inputs = processor, task, params, inputs
        self.info = TASKS[task]
        self.folder: str | None = None
        self.process: runner.EngineProcess | None = None
        self.files: dict[str, str] = {}
        self.reference = None  # the grid results are checked against (the input volume)
        self.last_progress: runner.Progress | None = None

    # -- start

    def _check_inputs(self) -> None:
        i = self.inputs
        if self.info.needs_volume:
            bridge.check_input_volume(i.volume)
        if self.info.segment == "mask" and (i.segment is None or i.segment[0] is None or not i.segment[1]):
            raise bridge.BridgeError(f"{self.info.title} needs a segment: choose a segmentation and a segment "
                                     "(draw it with the Segment Editor)")
        if i.output_volume is not None:
            if i.volume is not None and i.output_volume is i.volume:
                raise bridge.BridgeError("the output cannot be the input volume (the input is never changed); "
                                         "choose 'Create new volume' or another volume")
            if self.info.outputs[0].kind != "volume" or not i.output_volume.IsA("vtkMRMLScalarVolumeNode") \
                    or i.output_volume.IsA("vtkMRMLLabelMapVolumeNode"):
                raise bridge.BridgeError(f"the output of {self.info.title} cannot go into {i.output_volume.GetName()!r}")

    def start(self) -> "Job":
        self._check_inputs()
        self.folder = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self.processor.temp_root)
        try:
            i = self.inputs
            files: dict[str, str] = {}
            if self.info.needs_volume:
                self.reference = i.volume
                files["input"] = bridge.write_volume(i.volume, os.path.join(self.folder, "input.nrrd"))
            elif i.volume is not None:
                self.reference = i.volume  # synthesis on an existing volume's grid goes through anatomy
            if i.segment is not None and i.segment[0] is not None and i.segment[1] and self.info.segment:
                reference = self.reference
                if reference is None:
                    raise bridge.BridgeError(f"{self.info.title} needs an input volume for its segment")
                files["mask"] = bridge.write_segment(i.segment[0], i.segment[1], reference,
                                                     os.path.join(self.folder, "mask.nrrd"))
            if i.anatomy is not None:
                grid = self.reference if self.reference is not None else bridge.reference_volume_for_segmentation(i.anatomy)
                if self.reference is None:
                    self.reference = grid  # synthesis follows the anatomy: its results lie on this grid
                files["anatomy"] = bridge.write_anatomy(i.anatomy, grid, self.processor.anatomy_label,
                                                        os.path.join(self.folder, "anatomy.nrrd"))
            files.update(output_files(self.task, self.folder))
            self.files = files
            args = runner.engine_command(self.processor.python, self.task,
                                         engine_arguments(self.task, self.params, files))
            # `-m` puts the working folder first on sys.path: the engine's root makes the package
            # importable even where a launcher (PythonSlicer) rewrites PYTHONPATH.
            self.process = runner.EngineProcess(args, env=self.processor.environment(),
                                                cwd=self.processor.engine_root).start()
        except BaseException:
            self.cleanup()
            raise
        return self

    # -- while running

    def poll(self) -> list[runner.Event]:
        events = self.process.poll() if self.process else []
        for event in events:
            if isinstance(event, runner.Progress):
                self.last_progress = event
        return events

    @property
    def finished(self) -> bool:
        return self.process is None or self.process.finished

    def wait(self, timeout: float | None = None, on_event: Callable[[runner.Event], None] | None = None) -> "Job":
        def record(event):
            if isinstance(event, runner.Progress):
                self.last_progress = event
            if on_event is not None:
                on_event(event)

        try:
            self.process.wait(timeout=timeout, on_event=record)
        except BaseException:
            self.cleanup()
            raise
        return self

    def cancel(self, wait: bool = True) -> None:
        """Stop the engine. wait=True returns once its processes are gone (scripts); wait=False returns at
        once (a GUI thread: keep polling until `finished`, then finish() raises runner.Cancelled). The
        temporary folder goes once the engine's processes have ended, in either case."""
        if self.process is None:
            self.cleanup()
            return
        self.process.cancel(wait=wait)
        self.process.when_reaped(self.cleanup)

    # -- end

    def finish(self) -> Result:
        """The outputs as nodes in the scene; raises runner.EngineError (the engine's message) or
        runner.Cancelled, and then the scene is untouched."""
        try:
            self.process.check()
            built = self._read_outputs()
            return self._place(built)
        finally:
            self.cleanup()

    def _read_outputs(self) -> list[tuple[object, object]]:
        """Every output file as a node outside the scene: (Output, node). Nothing is placed yet, so an
        unreadable file leaves no half result behind."""
        built = []
        for out in self.info.outputs:
            path = self.files.get(out.key)
            if path is None or not os.path.isfile(path):
                if out.optional:
                    continue
                raise runner.EngineError(f"the engine did not write its {out.key} output")
            if out.kind == "segmentation":
                labelmap = bridge.read_volume(path, labelmap=True)
                bridge.snap_geometry(labelmap, self.reference)
                node = bridge.segmentation_from_labelmap(labelmap, self.reference if _in_scene(self.reference) else None,
                                                         out.suffix)
            else:
                node = bridge.read_volume(path)
                bridge.snap_geometry(node, self.reference)
            built.append((out, node))
        return built

    def _place(self, built) -> Result:
        """Add the results to the scene, all or none: a node that fails to go in takes the others out
        again. A chosen output volume is overwritten last, once nothing else can fail."""
        scene = self.processor.scene
        reference = self.reference if _in_scene(self.reference) else None
        input_name = reference.GetName() if reference is not None else None
        result = Result(seconds=self.process.seconds or 0.0, log=list(self.process.state.stderr))
        target = self.inputs.output_volume
        placed = []
        try:
            for index, (out, node) in enumerate(built):
                if index == 0 and target is not None:
                    continue
                name = result_name(input_name, self.task, out, self.params.region)
                placed.append(bridge.add_to_scene(scene, node, out.kind, name, reference).node)
        except BaseException:
            bridge.remove_nodes(scene, placed)
            raise
        if target is not None:
            bridge.replace_volume(target, built[0][1])
            placed.insert(0, target)
        result.nodes = placed
        return result

    def cleanup(self) -> None:
        if self.folder and os.path.isdir(self.folder):
            shutil.rmtree(self.folder, ignore_errors=True)


def _in_scene(node) -> bool:
    return node is not None and node.GetScene() is not None


class Processor:
    """Runs tasks on the nodes of one scene. `python` is the interpreter that runs the engine (Slicer's
    PythonSlicer in the app), `environment` its environment (Slicer's startup environment in the app),
    `temp_root` where each run's temporary folder goes (a disk with room for a few copies of the CT;
    default: Slicer's temporary folder in the app, the system's elsewhere)."""

    def __init__(self, scene, python: str | os.PathLike | None = None, engine_root: str | os.PathLike | None = None,
                 environment: dict[str, str] | None = None, temp_root: str | os.PathLike | None = None):
        self.scene = scene
        self.temp_root = default_temp_root() if temp_root is None else str(temp_root)  # None: the system's
        self.python = str(python or runner.default_python())
        self.engine_root = runner.engine_root(*([engine_root] if engine_root else []))
        self._base_environment = environment

    def environment(self) -> dict[str, str]:
        return runner.engine_environment(self._base_environment, self.engine_root)

    def anatomy_label(self, name: str) -> int:
        """The engine's anatomy vocabulary (TotalSegmentator names), read from its torch-free module."""
        return runner.import_engine_module("anatomy", self.engine_root).label_index(name)

    def start(self, task: str, params: TaskParameters, inputs: Inputs) -> Job:
        return Job(self, task, params, inputs).start()

    def process(self, task: str, params: TaskParameters | None = None, inputs: Inputs | None = None,
                on_event: Callable[[runner.Event], None] | None = None, timeout: float | None = None) -> Result:
        """Run a task to the end (the batch API): the new nodes, or runner.EngineError with the engine's
        message, and then the scene is as it was."""
        job = self.start(task, params or TaskParameters(), inputs or Inputs())
        job.wait(timeout=timeout, on_event=on_event)
        return job.finish()


def load_volume(scene, path: str | os.PathLike, name: str | None = None):
    """Read a volume file into the scene (what the batch script does for each input)."""
    node = bridge.read_volume(path)
    return bridge.add_to_scene(scene, node, "volume", name or _stem(path)).node


def save_node(node, path: str | os.PathLike) -> str:
    """Write a result node to a file: volumes as NRRD/NIfTI, segmentations as .seg.nrrd."""
    import slicer

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if node.IsA("vtkMRMLSegmentationNode"):
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(path))
        if not storage.WriteData(node):
            raise bridge.BridgeError(f"could not write {node.GetName()!r} to {path}")
        return str(path)
    return bridge.write_volume(node, path, compress=True)


def _stem(path: str | os.PathLike) -> str:
    name = Path(path).name
    for ext in (".nii.gz", ".seg.nrrd", ".nrrd", ".nii", ".mha", ".mhd"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(path).stem
