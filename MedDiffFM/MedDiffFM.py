"""MedDiffFM: a 3D CT diffusion foundation model (MedDiff-FM) in 3D Slicer.

A thin adapter over the engine: the panels fill a parameter node, the module's logic class hands nodes
to MedDiffFMLib (bridge + jobs + runner), which runs the engine (`PythonSlicer -m MedDiffFMLogic ...`) in
a child process and turns its outputs into new nodes. This file never imports torch; the settings'
defaults and choices are the engine's torch-free declarations, read through MedDiffFMLib.tasks.

Two things share the name "MedDiffFMLogic": the engine package (a folder beside this module, run in
a child process; only its settings declarations are read in this process) and the class MedDiffFMLogic below, the module's logic in
Slicer's template. The class keeps its name because Slicer derives the module name from it
(ScriptedLoadableModuleLogic strips "Logic": the parameter node saved in scenes is tagged "MedDiffFM").

Supported: Slicer 5.10 and later (Python 3.12). Older Slicers are refused with a message (deps.unsupported).
"""

import logging
import os
import shutil
import sys
import unittest
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MedDiffFMLib import bridge, deps, models, panel, runner
from MedDiffFMLib.jobs import Inputs, Processor
from MedDiffFMLib.tasks import DEVICES, PRECISIONS, PRESETS, REGIONS, TASKS, TaskParameters

# The engine's defaults (MedDiffFMLib.tasks reads them from the engine's declarations).
DEFAULTS = TaskParameters()

# The start of the engine's refusal of an image whose values are implausible for a CT (ctio.read_ct);
# the widget offers to run anyway (--force) when it sees it.
UNUSUAL_HU = "does not look like a CT in Hounsfield units"

# Each task's collapsible panel in MedDiffFM.ui; opening one closes the others, and Apply runs the open one.
PANELS = {
    "denoise": "denoiseCollapsibleButton",
    "anomaly": "anomalyCollapsibleButton",
    "inpaint": "inpaintCollapsibleButton",
    "lesion": "lesionCollapsibleButton",
    "superres": "superresCollapsibleButton",
    "synthesize": "synthesizeCollapsibleButton",
}
# The segment selector of each task that takes a segment.
SEGMENT_SELECTORS = {
    "anomaly": "anomalySegmentSelector",
    "inpaint": "inpaintSegmentSelector",
    "lesion": "lesionSegmentSelector",
}
POLL_MS = 200
CITATION = ("Yu Y, Gu Y, Zhang S, Zhang X. MedDiff-FM: A Diffusion-based Foundation Model for Versatile "
            "Medical Image Applications. arXiv:2410.15432, 2024.")


#
# MedDiffFM
#


class MedDiffFM(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedDiffFM")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Filtering")]
        self.parent.dependencies = []
        self.parent.contributors = ["MedDiffFM developers"]
        self.parent.helpText = _(
            "Denoising, anomaly maps, lesion inpainting and generation, super-resolution and synthesis of CT "
            "volumes with one 3D diffusion foundation model (MedDiff-FM). Load a CT, open a panel, draw a "
            "mask with the Segment Editor where the task needs one, and click Apply: the result is a new "
            "node beside the input, which is never changed.<br><br>"
            "The bundled models are demonstrations trained on procedural phantoms: <b>not for clinical use</b>."
            "<br><br>Method: " + CITATION + "<br>"
            'See <a href="https://github.com/MedDiffFM/MedDiffFM">the project page</a> for documentation.'
        )
        self.parent.acknowledgementText = _(
            "MedDiff-FM is the method of Yu, Gu, Zhang and Zhang (arXiv:2410.15432). This extension is an "
            "independent implementation built on MONAI and PyTorch; it follows the structure of Slicer's "
            "extension template (Jean-Christophe Fillion-Robin, Kitware, and Steve Pieper, Isomics, "
            "NIH grant 3P41RR013218-12S1)."
        )


#
# Parameters
#


@parameterNodeWrapper
class MedDiffFMParameterNode:
    """Every setting of the panels; saved with the scene, so reloading a scene restores the panel (the
    names are what saved scenes hold: keep them). Defaults are the engine's (DEFAULTS); a spin box
    cannot be empty, so 0 stands for a setting the engine estimates or derives (TaskParameters.given)."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    task: Annotated[str, Choice(list(TASKS))] = "denoise"
    model: str = ""
    device: Annotated[str, Choice(list(DEVICES))] = DEFAULTS.device
    preset: Annotated[str, Choice(list(PRESETS))] = DEFAULTS.preset
    region: Annotated[str, Choice(list(REGIONS))] = DEFAULTS.region
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = DEFAULTS.seed
    steps: Annotated[int, WithinRange(0, 1000)] = DEFAULTS.steps
    precision: Annotated[str, Choice(list(PRECISIONS))] = DEFAULTS.precision
    skipAir: bool = DEFAULTS.skip_air
    noiseLevel: Annotated[float, WithinRange(0.0, 1000.0)] = 0.0  # 0: estimated by the engine
    strength: Annotated[float, WithinRange(0.1, 5.0)] = DEFAULTS.strength
    anomalyThreshold: Annotated[float, WithinRange(0.0, 3000.0)] = 0.0  # 0: the engine's robust default
    inpaintLesion: bool = DEFAULTS.inpaint_lesion
    superresFactor: Annotated[float, WithinRange(1.0, 10.0)] = DEFAULTS.factor
    superresSpacing: Annotated[float, WithinRange(0.0, 10.0)] = 0.0  # 0: use the factor
    synthSizeX: Annotated[int, WithinRange(8, 1024)] = DEFAULTS.size[0]
    synthSizeY: Annotated[int, WithinRange(8, 1024)] = DEFAULTS.size[1]
    synthSizeZ: Annotated[int, WithinRange(8, 1024)] = DEFAULTS.size[2]
    synthSpacing: Annotated[float, WithinRange(0.0, 10.0)] = 0.0  # 0: the model's working spacing
    anatomySegmentation: vtkMRMLSegmentationNode
    # The segment selectors are not bound by connectGui; the widget keeps these in step by hand.
    anomalySegmentation: vtkMRMLSegmentationNode
    anomalySegmentID: str = ""
    inpaintSegmentation: vtkMRMLSegmentationNode
    inpaintSegmentID: str = ""
    lesionSegmentation: vtkMRMLSegmentationNode
    lesionSegmentID: str = ""


def slicerVersion() -> tuple:
    """(major, minor) of the running Slicer."""
    return (int(slicer.app.majorVersion), int(slicer.app.minorVersion))


def taskParameters(p: MedDiffFMParameterNode) -> TaskParameters:
    return TaskParameters(
        region=p.region, model=p.model, device=p.device, preset=p.preset, seed=p.seed, steps=p.steps,
        precision=p.precision, skip_air=p.skipAir,
        noise_level=p.noiseLevel, strength=p.strength, threshold=p.anomalyThreshold, inpaint_lesion=p.inpaintLesion,
        factor=p.superresFactor, spacing=p.superresSpacing, size=(p.synthSizeX, p.synthSizeY, p.synthSizeZ),
        synth_spacing=p.synthSpacing,
    )


def taskInputs(p: MedDiffFMParameterNode, task: str) -> Inputs:
    segment = None
    if task in SEGMENT_SELECTORS:
        node = getattr(p, f"{task}Segmentation")
        segment = (node, getattr(p, f"{task}SegmentID")) if node is not None else None
    # The output selector holds the user's choice of an existing volume; None means a new node.
    output = p.outputVolume if TASKS[task].outputs[0].kind == "volume" else None
    # Synthesis needs no input volume; with an anatomy segmentation its grid is that segmentation's.
    return Inputs(volume=p.inputVolume if TASKS[task].needs_volume else None, segment=segment,
                  anatomy=p.anatomySegmentation if task == "synthesize" else None, output_volume=output)


#
# Widget
#


class MedDiffFMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._timer = None
        self._cards = []
        self._installing = False  # Apply is off while the dependencies install
        self._sceneCloses = 0  # counts scene closes, so a run started after an installation can tell
        self._unsupported = None  # why this Slicer cannot run MedDiffFM, if it cannot

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedDiffFM.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedDiffFMLogic()
        self._unsupported = deps.unsupported(slicerVersion(), sys.version_info)

        # The device, preset and region combo boxes are filled by connectGui from the Choice annotations.
        self._fillModels()
        self.ui.modelSelector.currentIndexChanged.connect(self.onModelChanged)

        for task, name in PANELS.items():
            getattr(self.ui, name).contentsCollapsed.connect(lambda collapsed, t=task: self.onPanelToggled(t, collapsed))
        for task, name in SEGMENT_SELECTORS.items():
            selector = getattr(self.ui, name)
            selector.currentNodeChanged.connect(lambda node, t=task: self.onSegmentationChanged(t, node))
            selector.currentSegmentChanged.connect(lambda segmentId, t=task: self.onSegmentChanged(t, segmentId))
        self.ui.inpaintSegmentEditorButton.clicked.connect(lambda: self.onOpenSegmentEditor("inpaint"))
        self.ui.lesionSegmentEditorButton.clicked.connect(lambda: self.onOpenSegmentEditor("lesion"))
        self.ui.anomalySegmentEditorButton.clicked.connect(lambda: self.onOpenSegmentEditor("anomaly"))

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.hide()
        self.ui.statusLabel.text = self._unsupported or ""

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.onPoll)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        if self._job is not None:
            # Without waiting: the runner's own thread kills what is left and removes the run's files.
            self._job.cancel(wait=False)
            self._job = None
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self._sceneCloses += 1
        if self._job is not None:  # the nodes the run reads are about to disappear
            self.onCancelButton()  # returns at once; the poll timer sees the run end and adds nothing
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._restoreSegmentSelectors()
            self._restorePanels()
            self._restoreModel()
            self._checkCanApply()

    def _restoreSegmentSelectors(self) -> None:
        for task, name in SEGMENT_SELECTORS.items():
            selector = getattr(self.ui, name)
            # Read the segment first: choosing the node makes the selector announce its first segment.
            segmentId = getattr(self._parameterNode, f"{task}SegmentID")
            selector.setCurrentNode(getattr(self._parameterNode, f"{task}Segmentation"))
            if segmentId:
                selector.setCurrentSegmentID(segmentId)

    def _restorePanels(self) -> None:
        for task, name in PANELS.items():
            getattr(self.ui, name).collapsed = task != self._parameterNode.task

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        task = p.task
        info = TASKS[task]
        state = panel.apply_state(
            task, has_volume=bool(p.inputVolume),
            has_segment=bool(getattr(p, f"{task}Segmentation", None) and getattr(p, f"{task}SegmentID", "")),
            unsupported=self._unsupported, installing=self._installing, running=self._job is not None)
        self.ui.applyButton.enabled = state.enabled
        self.ui.applyButton.text = _("Apply: {title}").format(title=info.title)
        self.ui.applyButton.toolTip = state.reason or info.help
        self.ui.outputSelector.enabled = info.outputs[0].kind == "volume"

    # -- panels, models, segments

    def onPanelToggled(self, task: str, collapsed: bool) -> None:
        if collapsed or self._parameterNode is None:
            return
        for other, name in PANELS.items():
            if other != task:
                getattr(self.ui, name).collapsed = True
        self._parameterNode.task = task

    def _fillModels(self) -> None:
        self.ui.modelSelector.blockSignals(True)
        self.ui.modelSelector.clear()
        self.ui.modelSelector.addItem(_("Default (the engine's)"), "")
        try:
            self._cards = [c for c in models.list_cards(runner.engine_root()) if c.kind == "base"]
        except runner.EngineError as exc:
            self._cards = []
            self.ui.modelCardLabel.text = str(exc)
        for card in self._cards:
            self.ui.modelSelector.addItem(card.name, str(card.path))
        self.ui.modelSelector.blockSignals(False)
        self.onModelChanged(self.ui.modelSelector.currentIndex)

    def _restoreModel(self) -> None:
        index = self.ui.modelSelector.findData(self._parameterNode.model)
        self.ui.modelSelector.setCurrentIndex(max(index, 0))

    def onModelChanged(self, index: int) -> None:
        path = self.ui.modelSelector.itemData(index) or ""
        card = next((c for c in self._cards if str(c.path) == path), None)
        if card is None and self._cards and not path:
            # The engine's default is the bundled base model; show its card.
            card = next((c for c in self._cards if c.name == "meddifffm-base-demo"), None)
        self.ui.modelCardLabel.text = models.card_html(card)
        if self._parameterNode is not None:
            self._parameterNode.model = path

    def onSegmentationChanged(self, task: str, node) -> None:
        if self._parameterNode is not None:
            setattr(self._parameterNode, f"{task}Segmentation", node)

    def onSegmentChanged(self, task: str, segmentId: str) -> None:
        if self._parameterNode is not None:
            setattr(self._parameterNode, f"{task}SegmentID", segmentId or "")

    def onOpenSegmentEditor(self, task: str) -> None:
        """Open the Segment Editor on this task's segmentation (made now if there is none) and the input."""
        p = self._parameterNode
        segmentation = getattr(p, f"{task}Segmentation")
        if segmentation is None:
            segmentation = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", (p.inputVolume.GetName() + " " if p.inputVolume else "") + _("mask"))
            if p.inputVolume:
                segmentation.SetReferenceImageGeometryParameterFromVolumeNode(p.inputVolume)
            segmentation.CreateDefaultDisplayNodes()
            if segmentation.GetSegmentation().GetNumberOfSegments() == 0:
                segmentation.GetSegmentation().AddEmptySegment("lesion" if task != "anomaly" else "region of interest")
            getattr(self.ui, SEGMENT_SELECTORS[task]).setCurrentNode(segmentation)
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(segmentation)
        if p.inputVolume:
            # setSourceVolumeNode since Slicer 5.4; setMasterVolumeNode before.
            setSource = getattr(editor, "setSourceVolumeNode", None) or editor.setMasterVolumeNode
            setSource(p.inputVolume)

    # -- running

    def onApplyButton(self) -> None:
        self._start()

    def _start(self, force: bool = False) -> None:
        """Start the panel's task; force passes the engine's --force (run on values unusual for a CT)."""
        closes = self._sceneCloses
        if not self._ensureDependencies():
            return
        # pip keeps the event loop running: the scene may have been closed while it worked.
        if self._sceneCloses != closes or self._parameterNode is None:
            self.ui.statusLabel.text = _("The scene was closed while the packages were installed; "
                                         "nothing was started. Click Apply again.")
            return
        p = self._parameterNode
        task = p.task
        try:
            params = taskParameters(p)
            if force:
                params = params.with_(extra=(*params.extra, "--force"))
            self._job = self.logic.start(task, params, taskInputs(p, task))
        except (bridge.BridgeError, runner.EngineError, ValueError, RuntimeError) as exc:
            slicer.util.errorDisplay(_("MedDiffFM could not start: {error}").format(error=exc))
            return
        self.ui.progressBar.show()
        self.ui.progressBar.setRange(0, 0)  # busy until the engine reports a stage
        self.ui.statusLabel.text = _("Starting the engine...")
        self.ui.cancelButton.enabled = True
        self._checkCanApply()
        self._timer.start()

    def _ensureDependencies(self) -> bool:
        """Install what the engine needs (first Apply), with Apply off meanwhile. Every failure, whatever
        raised it (pip, light-the-torch, the PyTorch extension), ends in a dialog. False: do not start."""
        self._installing = True
        self._checkCanApply()
        try:
            return self.logic.ensureDependencies(confirm=True)
        except deps.InstallError as exc:
            cause = exc.__cause__  # e.g. pip's CalledProcessError; pip's own log is in the Python console
            details = f"{type(cause).__name__}: {cause}" if cause is not None else ""
            slicer.util.errorDisplay(str(exc), windowTitle=_("MedDiffFM"), detailedText=details)
        except Exception as exc:  # a bug of ours: say so in a dialog, keep the traceback in the log
            logging.exception("MedDiffFM: checking or installing the dependencies failed")
            slicer.util.errorDisplay(_("MedDiffFM could not install its dependencies: {error}").format(error=exc),
                                     windowTitle=_("MedDiffFM"))
        finally:
            self._installing = False
            self._checkCanApply()
        return False

    def onPoll(self) -> None:
        job = self._job
        if job is None:
            self._timer.stop()
            return
        for event in job.poll():
            if isinstance(event, runner.Progress):
                if event.fraction is None:
                    self.ui.progressBar.setRange(0, 0)
                else:
                    self.ui.progressBar.setRange(0, 100)
                    self.ui.progressBar.value = int(round(100 * event.fraction))
                self.ui.statusLabel.text = event.text
            elif isinstance(event, runner.Log) and event.text:
                logging.info(f"MedDiffFM engine: {event.text}")
        if job.finished:
            self._timer.stop()
            self._finish(job)

    def _finish(self, job) -> None:
        self._job = None
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.hide()
        try:
            result = job.finish()
        except runner.Cancelled:
            self.ui.statusLabel.text = _("Cancelled; nothing was changed.")
        except (runner.EngineError, bridge.BridgeError) as exc:
            self.ui.statusLabel.text = _("Failed; nothing was changed.")
            details = "\n".join(job.process.state.stderr) if job.process else ""
            if UNUSUAL_HU in str(exc) and "--force" not in job.params.extra:
                # The engine's --force has no place in a dialog: ask instead, and run again if told to.
                if slicer.util.confirmYesNoDisplay(
                        str(exc) + "\n\n" + _("Run anyway? The results are likely meaningless."),
                        windowTitle=_("MedDiffFM")):
                    self._start(force=True)
            else:
                slicer.util.errorDisplay(str(exc), windowTitle=_("MedDiffFM"), detailedText=details)
        except Exception as exc:  # a bug of ours: say so, keep the panel usable, log the traceback
            logging.exception("MedDiffFM: reading the results failed")
            self.ui.statusLabel.text = _("Failed; nothing was changed.")
            slicer.util.errorDisplay(_("Reading the results failed: {error}").format(error=exc))
        else:
            self.ui.statusLabel.text = _("Done in {seconds:.0f} s: {names}").format(
                seconds=result.seconds, names=", ".join(n.GetName() for n in result.nodes))
            self.logic.showResults(result.nodes, job.reference)
        self._checkCanApply()

    def onCancelButton(self) -> None:
        if self._job is not None:
            self.ui.statusLabel.text = _("Cancelling...")
            self.ui.cancelButton.enabled = False
            # Returns at once: the engine's process tree is stopped and reaped off the GUI thread, and
            # the poll timer finishes the job when it has ended.
            self._job.cancel(wait=False)


#
# Logic
#


class MedDiffFMLogic(ScriptedLoadableModuleLogic):
    """The Slicer module's logic (Slicer's template names it <Module>Logic; it is not the engine package
    MedDiffFMLogic, which runs in a child process). It is the batch API: `process(task, params, inputs)`
    runs without the GUI (Scripts/batch.py uses it); `start(...)` returns a running job that the widget
    polls. The work is done by MedDiffFMLib.jobs.Processor."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._processor = None
        self.installer = deps.Installer()

    def getParameterNode(self):
        return MedDiffFMParameterNode(super().getParameterNode())

    @property
    def scene(self):
        return slicer.mrmlScene

    @staticmethod
    def pythonExecutable() -> str:
        """Slicer's Python launcher: it sets up the environment the engine's packages need."""
        name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
        found = shutil.which(name) or os.path.join(slicer.app.slicerHome, "bin", name)
        return found if os.path.exists(found) else sys.executable

    def processor(self) -> Processor:
        if self._processor is None or self._processor.scene is not slicer.mrmlScene:
            # Runs' temporary files go to Slicer's temporary folder (Application Settings > General).
            self._processor = Processor(slicer.mrmlScene, python=self.pythonExecutable(),
                                        environment=slicer.util.startupEnvironment(),
                                        temp_root=slicer.util.tempDirectory(key="MedDiffFM", includeDateTime=False))
        return self._processor

    def ensureDependencies(self, confirm: bool = True, installInTesting: bool = False) -> bool:
        """Install what the engine needs into Slicer's Python, once: torch through the PyTorch extension's
        installer (the build for this machine's GPU, or CPU), the rest with Slicer's pip helpers. Versions
        count: a package older than requirements.txt asks for is upgraded. Returns False when the user
        declines; raises deps.InstallError (a message for the user) when this Slicer is too old or an
        installation fails. In testing mode (ctest) Slicer's pip_ensure installs nothing unless
        installInTesting is set."""
        reason = deps.unsupported(slicerVersion(), sys.version_info)
        if reason:
            raise deps.InstallError(reason)

        def ask(unmet) -> bool:
            return not confirm or slicer.util.confirmOkCancelDisplay(
                _("MedDiffFM needs these Python packages, which will be downloaded and installed now "
                  "(this takes a few minutes):\n{packages}").format(packages="\n".join(f"- {u}" for u in unmet)),
                windowTitle=_("MedDiffFM"))

        return deps.ensure(self.installer, self._installTorch,
                           lambda requirements: self._installPackages(requirements, installInTesting),
                           confirm=ask)

    def _installTorch(self, requirement: str) -> None:
        """torch alone, with light-the-torch as the PyTorch extension sets it up. Not PyTorchUtilsLogic's
        installTorch(): it imports torch into Slicer's process (which this module never does) and adds
        torchvision, which the engine does not use."""
        try:
            import PyTorchUtils
        except ImportError:
            raise deps.InstallError(_("PyTorch is missing and the PyTorch extension is not installed: install "
                                      "'PyTorch' from the Extensions Manager, restart Slicer, and click Apply again"))
        if not deps.installed("light_the_torch"):
            # The PyTorch extension knows which light-the-torch supports current GPUs (Slicer's fork).
            installLtt = getattr(PyTorchUtils.PyTorchUtilsLogic, "_installLightTheTorch", None)
            if installLtt is not None:
                installLtt()
            else:
                slicer.util.pip_install("light-the-torch>=0.5")
        proc = slicer.util.launchConsoleProcess(deps.torch_install_command(self.pythonExecutable(), requirement),
                                                useStartupEnvironment=False)
        slicer.util.logProcessOutput(proc)  # raises CalledProcessError when the installation fails

    @staticmethod
    def _installPackages(requirements, installInTesting: bool = False) -> None:
        try:
            import slicer.packaging as packaging  # Slicer 5.12+: progress dialog, restart detection
        except ImportError:
            packaging = None
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            packaging.pip_ensure(requirements, requester="MedDiffFM", prompt_install=False,
                                 skip_in_testing=not installInTesting)
        else:
            slicer.util.pip_install(list(requirements))

    def start(self, task: str, params: TaskParameters, inputs: Inputs):
        return self.processor().start(task, params, inputs)

    def process(self, task: str, params: TaskParameters = None, inputs: Inputs = None, on_event=None,
                timeout: float = None):
        """Run a task to the end; returns a Result whose `nodes` are the new nodes. Raises
        runner.EngineError with the engine's message on failure (the scene is then as it was), and
        deps.InstallError when the engine's packages cannot be installed."""
        self.ensureDependencies(confirm=False)
        return self.processor().process(task, params or TaskParameters(), inputs or Inputs(), on_event, timeout)

    def showResults(self, nodes, reference) -> None:
        """Show a result: a CT in the background, a heat map over the input, a segmentation on top."""
        background = reference
        foreground = None
        for node in nodes:
            if node.IsA("vtkMRMLSegmentationNode"):
                node.CreateDefaultDisplayNodes()
                node.GetDisplayNode().SetVisibility(True)
            elif node.GetDisplayNode() is not None and bridge.heatmap_color_id(slicer.mrmlScene) and \
                    node.GetDisplayNode().GetColorNodeID() == bridge.heatmap_color_id(slicer.mrmlScene):
                foreground = node
            else:
                background = node
        slicer.util.setSliceViewerLayers(background=background, foreground=foreground,
                                         foregroundOpacity=0.5 if foreground else None, fit=True)


#
# Test
#


class MedDiffFMTest(ScriptedLoadableModuleTest):
    """Runs each task on a small phantom inside Slicer (ctest). The pytest suites cover the same logic
    against slicer-core on machines without Slicer.

    ctest runs Slicer in testing mode, where Slicer's pip_ensure installs nothing unless told to: this
    test installs the engine's packages deliberately (torch and MONAI: minutes and a network). With
    MEDDIFFFM_TEST_NO_INSTALL=1 in the environment it skips the task runs instead when they are missing,
    and says so."""

    NO_INSTALL = "MEDDIFFFM_TEST_NO_INSTALL"

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):  # Reload and Test; ctest runs each test_ method itself
        self.setUp()
        self.test_slicer_version_is_supported()
        self.setUp()
        try:
            self.test_every_task_on_a_small_volume()
        except unittest.SkipTest as skipped:
            self.delayDisplay(f"Skipped: {skipped}")

    def test_slicer_version_is_supported(self):
        self.assertIsNone(deps.unsupported(slicerVersion(), sys.version_info))

    def _installEngineDependencies(self) -> None:
        unmet = deps.check()
        if unmet and os.environ.get(self.NO_INSTALL):
            self.skipTest(f"{self.NO_INSTALL} is set and the engine's packages are missing: "
                          + "; ".join(map(str, unmet)))
        if unmet:
            self.delayDisplay("Installing the engine's packages (this takes minutes): " + "; ".join(map(str, unmet)))
        self.assertTrue(MedDiffFMLogic().ensureDependencies(confirm=False, installInTesting=True))
        self.assertEqual(deps.recheck(), [])

    def _phantom(self):
        import numpy as np

        rng = np.random.default_rng(0)
        shape = (24, 32, 32)
        k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
        body = ((j - 16) / 12.0) ** 2 + ((i - 16) / 13.0) ** 2 < 1
        array = np.where(body, 40.0, -1000.0) + rng.normal(0, 30, shape)
        volume = slicer.util.addVolumeFromArray(array.astype(np.int16), name="Phantom CT")
        volume.SetSpacing(2.0, 2.0, 2.5)
        volume.SetOrigin(-31.0, -31.0, -30.0)
        mask = np.zeros(shape, np.uint8)
        mask[10:14, 14:19, 14:19] = 1
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mask")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        segmentId = segmentation.GetSegmentation().AddEmptySegment("lesion")
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, segmentId, volume)
        return volume, segmentation, segmentId

    def test_every_task_on_a_small_volume(self):
        self._installEngineDependencies()
        self.delayDisplay("Running every MedDiffFM task on a small phantom (fast preset, 2 steps)")
        volume, segmentation, segmentId = self._phantom()
        logic = MedDiffFMLogic()
        params = TaskParameters(preset="fast", steps=2, device="auto", size=(32, 32, 32))
        before = bridge.scene_snapshot(slicer.mrmlScene, [volume])
        for task in TASKS:
            inputs = Inputs(volume=volume if TASKS[task].needs_volume else None,
                            segment=(segmentation, segmentId) if TASKS[task].segment else None)
            result = logic.process(task, params, inputs)
            self.assertTrue(result.nodes, task)
            main = result.nodes[0]
            if TASKS[task].needs_volume and task != "superres":  # super-resolution adds slices
                self.assertTrue(bridge.same_geometry(main, volume), task)
            self.delayDisplay(f"{task}: {', '.join(n.GetName() for n in result.nodes)} in {result.seconds:.0f} s")
        # The input is never changed.
        self.assertEqual(bridge.scene_snapshot(slicer.mrmlScene, [volume])["voxels"], before["voxels"])
        # A failing run leaves the scene as it was and says why.
        snapshot = bridge.scene_snapshot(slicer.mrmlScene, [volume])
        with self.assertRaises(runner.EngineError):
            logic.process("denoise", TaskParameters(model="no-such-model", steps=2), Inputs(volume=volume))
        self.assertEqual(bridge.scene_snapshot(slicer.mrmlScene, [volume]), snapshot)
        self.delayDisplay("Test passed")
