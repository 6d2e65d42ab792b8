"""`meddifffm-web`: the MedDiffFM panels in a web browser, on trame-slicer.

    meddifffm-web [--port 8080] [--host 127.0.0.1] [--input scan.nii.gz] [--engine-python PATH]

serves on 127.0.0.1 (loopback only) unless told otherwise; `--port 0` picks a free port. The page shows
three slice views and a 3D view of the open CT, the model card, the six task panels with the Slicer
module's parameters, a progress bar with Cancel, the results (new nodes over the input) with a
download link each, and a lesion-mask painter for the lesion tasks. Reach it from a laptop through an
SSH tunnel (docs/web.md).

Besides the page, two plain HTTP routes: `meddifffm/scene.json` (the scene as JSON: nodes, geometry,
voxel digests, what the slice views show) and `meddifffm/download/<node id>` (a node as .nrrd or
.seg.nrrd).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time

from trame.app import TrameApp
from trame.widgets import client, html
from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout
from trame_vuetify.widgets import vuetify3 as v3

from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.utils import write_client_files_to_dir

from .session import ResultItem, Session, SessionError, model_choices

from MedDiffFMLib import runner  # noqa: E402  (made importable by .session)
from MedDiffFMLib.tasks import DEVICES, PRECISIONS, PRESETS, REGIONS, SKIP_AIR_TASKS, TASKS, TaskParameters  # noqa: E402

POLL_SECONDS = 0.2
ROUTE = "meddifffm"

# The panel fields: state name -> (TaskParameters field, type, default). The defaults are TaskParameters'
# (the engine's); an unset number (None: the engine estimates or derives it) shows as 0, as in Slicer.
_DEFAULTS = TaskParameters()
NUMBER_FIELDS = {
    state: (name, kind, kind(getattr(_DEFAULTS, name) or 0))
    for state, name, kind in (("seed", "seed", int), ("steps", "steps", int), ("noise_level", "noise_level", float),
                              ("strength", "strength", float), ("threshold", "threshold", float),
                              ("factor", "factor", float), ("sr_spacing", "spacing", float),
                              ("synth_spacing", "synth_spacing", float))
}
CHOICE_FIELDS = {name: getattr(_DEFAULTS, name) for name in ("region", "device", "precision")}
CHOICE_FIELDS["preset"] = "fast"  # a browser session is usually a remote CPU: the quickest preset first


def _slice_view_ui(server, view_id, slice_view):
    """trame-slicer's slice view controls, plus a marker naming the view's slice node (tests and
    scripts find the Red/Yellow/Green view's image by it)."""
    from trame_slicer.app.ui import create_vertical_slice_view_gutter_ui

    html.Div(id=f"mdf-view-{slice_view.get_view_node_id()}", style="display: none")
    create_vertical_slice_view_gutter_ui(server, view_id, slice_view)


class MedDiffFMWebApp(TrameApp):
    def __init__(self, server=None, engine_python: str | None = None, temp_root: str | None = None):
        super().__init__(server=server)
        self.slicer_app = SlicerApp()
        register_rca_factories(self.slicer_app.view_manager, self.server, slice_view_ui_f=_slice_view_ui)
        self.layout_manager = LayoutManager(self.slicer_app.scene, self.slicer_app.view_manager, self.server)
        self.layout_manager.register_layout_dict(LayoutManager.default_grid_configuration())
        self.layout_manager.set_layout("Quad View")
        self.session = Session(self.slicer_app, python=engine_python, temp_root=temp_root)
        self._watcher: asyncio.Task | None = None
        self._init_state()
        self._build_ui()
        self.ctrl.on_server_bind.add(self._bind_routes)

    # ------------------------------------------------------------------------------------ state

    def _init_state(self) -> None:
        s = self.state
        model_items, self._card_html, controlnet_items = model_choices(self.session.processor.engine_root)
        s.model_items, s.controlnet_items = model_items, controlnet_items
        s.model, s.controlnet = "", ""
        s.card_html = self._card_html.get("", "")
        s.path = ""
        s.task = "denoise"
        s.task_titles = {name: info.title for name, info in TASKS.items()}
        for name, default in CHOICE_FIELDS.items():
            s[name] = default
        for name, (_, _, default) in NUMBER_FIELDS.items():
            s[name] = default
        s.size_x, s.size_y, s.size_z = 64, 64, 64
        s.skip_air = False
        s.inpaint_lesion = False
        s.volume_items, s.input_id = [], None
        s.segmentation_items, s.mask_id, s.roi_id, s.anatomy_id = [], None, None, None
        s.brush = "none"
        s.brush_size = 8
        s.running = False
        s.progress = 0
        s.progress_busy = False
        s.status = "Open a CT: type its path on the server, or upload a file."
        s.error = ""
        s.results = []
        s.change("model")(self._on_model)
        s.change("input_id")(self._on_input)
        s.change("brush", "brush_size", "mask_id")(self._on_brush)

    def _on_model(self, model, **_):
        self.state.card_html = self._card_html.get(model or "", "")

    def _on_input(self, input_id, **_):
        if input_id and (self.session.input_node is None or self.session.input_node.GetID() != input_id):
            self._guard(lambda: self.session.set_input(input_id))

    def _on_brush(self, brush, brush_size, mask_id, **_):
        def apply():
            if brush != "none":
                if not mask_id:
                    raise SessionError("choose or create a mask first ('New mask')")
                self.session.edit_mask(mask_id)
            self.session.set_brush(brush, float(brush_size or 8))

        if not self._guard(apply):
            self.state.brush = "none"

    def _refresh_lists(self) -> None:
        s = self.state
        s.volume_items = [{"title": n.GetName(), "value": n.GetID()} for n in self.session.volumes()]
        s.segmentation_items = [{"title": n.GetName(), "value": n.GetID()} for n in self.session.segmentations()]
        s.input_id = self.session.input_node.GetID() if self.session.input_node is not None else None
        s.results = [dict(id=r.node_id, name=r.name, kind=r.kind, task=r.task) for r in self.session.results]

    def _guard(self, action) -> bool:
        """Run a user action; a SessionError or BridgeError becomes the error line instead of a traceback."""
        try:
            action()
        except (SessionError, ValueError, runner.EngineError) as exc:
            self.state.error = str(exc)
            return False
        self.state.error = ""
        return True

    def parameters(self) -> TaskParameters:
        s = self.state
        values = {}
        for name, (field, kind, default) in NUMBER_FIELDS.items():
            try:
                values[field] = kind(float(s[name])) if s[name] not in (None, "") else default
            except (TypeError, ValueError):
                raise SessionError(f"{name.replace('_', ' ')} must be a number, not {s[name]!r}") from None
        try:
            size = tuple(int(float(s[f"size_{a}"])) for a in "xyz")
        except (TypeError, ValueError):
            raise SessionError("the synthesized size must be three whole numbers") from None
        return TaskParameters(region=s.region, model=s.model or "", device=s.device, preset=s.preset,
                              precision=s.precision, skip_air=bool(s.skip_air), inpaint_lesion=bool(s.inpaint_lesion),
                              controlnet=s.controlnet or "", size=size, **values)

    # ---------------------------------------------------------------------------------- actions

    def open_path(self):
        if self._guard(lambda: self.session.open_path(self.state.path)):
            self.state.status = f"Opened {self.session.input_node.GetName()}."
        self._refresh_lists()

    def upload(self, files):
        with tempfile.TemporaryDirectory(prefix="MedDiffFM-upload-") as folder:
            paths = write_client_files_to_dir(files or [], folder)
            if self._guard(lambda: self.session.open_files(paths)):
                self.state.status = f"Opened {self.session.input_node.GetName()}."
        self._refresh_lists()

    def new_mask(self):
        def make():
            node = self.session.new_mask()
            self._refresh_lists()
            self.state.mask_id = node.GetID()
            self.state.brush = "paint"

        self._guard(make)

    async def show_result(self, node_id):
        item = next((r for r in self.session.results if r.node_id == node_id), None)
        if item is not None:
            self.session.show_result(item)
        elif node_id == self.state.input_id and self.session.input_node is not None:
            self.session.show_volume(self.session.input_node, in_3d=False)
        await self._render_again()

    def apply(self, task: str | None = None):
        s = self.state
        # The page sends the task it shows with the click: its panel change may reach the server after it.
        task = task if task in TASKS else s.task
        s.task = task
        mask = s.roi_id if task == "anomaly" else s.mask_id

        def start():
            self.session.start(task, self.parameters(), mask_id=mask or "", anatomy_id=s.anatomy_id or "")

        s.brush = "none"
        if not self._guard(start):
            return
        s.running, s.progress, s.progress_busy = True, 0, True
        s.status = f"{TASKS[task].title}: starting the engine..."
        self._watcher = asyncio.ensure_future(self._watch(self.session.job, task))

    async def _watch(self, job, task):
        started = time.monotonic()
        while self.session.job is job and not job.finished:
            with self.state:
                for event in job.poll():
                    if isinstance(event, runner.Progress):
                        fraction = event.fraction
                        self.state.progress_busy = fraction is None
                        self.state.progress = 0 if fraction is None else round(100 * fraction)
                        self.state.status = f"{TASKS[task].title}: {event.text}"
            await asyncio.sleep(POLL_SECONDS)
        if self.session.job is not job:
            return  # cancelled: cancel() has reported
        with self.state:
            try:
                items = self.session.finish()
            except runner.Cancelled:
                self.state.status = "Cancelled; nothing was changed."
            except (runner.EngineError, ValueError) as exc:
                self.state.status = "Failed; nothing was changed."
                self.state.error = str(exc)
            else:
                names = ", ".join(i.name for i in items)
                self.state.status = f"Done in {time.monotonic() - started:.0f} s: {names}"
            self.state.running, self.state.progress_busy = False, False
            self._refresh_lists()
        await self._render_again()

    async def _render_again(self):
        """Render every view again shortly after a result is shown: a view the mouse is not over could
        keep its previous picture (seen with the sagittal view after an overlay was added)."""
        for delay in (0.5, 2.0):
            await asyncio.sleep(delay)
            for view in self.slicer_app.view_manager.get_views():
                view.schedule_render()

    async def cancel(self):
        if self.session.job is None:
            return
        self.state.status = "Cancelling..."
        self.state.flush()
        await asyncio.get_running_loop().run_in_executor(None, self.session.cancel)
        with self.state:
            self.state.running, self.state.progress_busy, self.state.progress = False, False, 0
            self.state.status = "Cancelled; nothing was changed."

    # ---------------------------------------------------------------------------------- routes

    def _bind_routes(self, wslink_server):
        from aiohttp import web

        async def scene(_request):
            return web.json_response(self.session.describe())

        async def download(request):
            try:
                filename, data = self.session.export(request.match_info["node_id"])
            except SessionError as exc:
                return web.Response(status=404, text=str(exc))
            return web.Response(body=data, content_type="application/octet-stream",
                                headers={"Content-Disposition": f'attachment; filename="{filename}"'})

        wslink_server.app.router.add_routes([web.get(f"/{ROUTE}/scene.json", scene),
                                             web.get(f"/{ROUTE}/download/{{node_id}}", download)])

    # ------------------------------------------------------------------------------------- UI

    def _build_ui(self):
        with SinglePageWithDrawerLayout(self.server, full_height=True) as self.ui:
            self.ui.root.theme = "dark"
            self.ui.title.set_text("MedDiffFM")
            self.ui.drawer.width = 430
            with self.ui.toolbar:
                v3.VSpacer()
                v3.VTextField(v_model=("path",), label="CT on the server (file or DICOM folder)", id="mdf-path",
                              density="compact", hide_details=True, style="max-width: 520px",
                              __properties=[("id", "id")], keydown_enter=self.open_path)
                v3.VBtn("Open", click=self.open_path, id="mdf-open", classes="mx-2", variant="tonal")
                v3.VFileInput(
                    change=f"trigger('{self.ctrl.trigger_name(self.upload)}', [$event.target.files])",
                    prepend_icon="mdi-file-upload", multiple=True, hide_input=True, density="compact",
                    hide_details=True, style="max-width: 48px", id="mdf-upload", __properties=[("id", "id")],
                )
            with self.ui.drawer:
                self._drawer()
            with self.ui.content:
                with html.Div(style="height: 100%; width: 100%;", id="mdf-views"):
                    self.layout_manager.initialize_layout_grid(self.ui)

    def _drawer(self):
        with html.Div(classes="pa-3", style="font-size: 0.9rem;"):
            v3.VSelect(v_model=("input_id",), items=("volume_items",), label="Input volume", density="compact",
                       id="mdf-input", __properties=[("id", "id")])
            with v3.VExpansionPanels(variant="accordion", classes="mb-2"):
                with v3.VExpansionPanel(title="Model and settings"):
                    with v3.VExpansionPanelText():
                        v3.VSelect(v_model=("model",), items=("model_items",), label="Model", density="compact")
                        html.Div(v_html=("card_html",), classes="text-caption mb-2", id="mdf-card",
                                 style="max-height: 220px; overflow-y: auto;")
                        with v3.VRow(dense=True):
                            with v3.VCol():
                                v3.VSelect(v_model=("region",), items=("regions", list(REGIONS)), label="Body region",
                                           density="compact")
                            with v3.VCol():
                                v3.VSelect(v_model=("preset",), items=("presets", list(PRESETS)), label="Preset",
                                           density="compact")
                        with v3.VRow(dense=True):
                            with v3.VCol():
                                v3.VSelect(v_model=("device",), items=("devices", list(DEVICES)), label="Device",
                                           density="compact")
                            with v3.VCol():
                                v3.VSelect(v_model=("precision",), items=("precisions", list(PRECISIONS)),
                                           label="Precision", density="compact")
                        with v3.VRow(dense=True):
                            with v3.VCol():
                                v3.VTextField(v_model=("steps",), label="Steps (0: preset's)", type="number",
                                              density="compact", id="mdf-steps", __properties=[("id", "id")])
                            with v3.VCol():
                                v3.VTextField(v_model=("seed",), label="Seed", type="number", density="compact")
                        v3.VCheckbox(v_model=("skip_air",), label=f"Skip air ({', '.join(SKIP_AIR_TASKS)})",
                                     density="compact", hide_details=True)
            with v3.VExpansionPanels(v_model=("task",), mandatory=True, variant="accordion", id="mdf-tasks",
                                     __properties=[("id", "id")]):
                for name, info in TASKS.items():
                    with v3.VExpansionPanel(value=name, title=info.title, id=f"mdf-task-{name}",
                                            __properties=[("id", "id")]):
                        with v3.VExpansionPanelText():
                            html.Div(info.help, classes="text-caption mb-2")
                            self._task_fields(name)
            with html.Div(classes="mt-3"):
                with v3.VRow(dense=True):
                    with v3.VCol():
                        v3.VBtn("{{ 'Apply: ' + (task_titles[task] || task) }}", click=(self.apply, "[task]"), disabled=("running",), color="primary",
                                block=True, id="mdf-apply", __properties=[("id", "id")])
                    with v3.VCol(cols=4):
                        v3.VBtn("Cancel", click=self.cancel, disabled=("!running",), block=True, id="mdf-cancel",
                                __properties=[("id", "id")])
                v3.VProgressLinear(v_show=("running",), model_value=("progress",), indeterminate=("progress_busy",),
                                   height=8, classes="my-2", color="primary", id="mdf-progress",
                                   __properties=[("id", "id")])
                html.Div("{{ status }}", classes="text-body-2 my-1", id="mdf-status")
                v3.VAlert(v_if=("error",), text=("error",), type="error", density="compact", id="mdf-error",
                          __properties=[("id", "id")])
            html.Div("Results", classes="text-subtitle-2 mt-3")
            with v3.VList(density="compact", id="mdf-results", __properties=[("id", "id")]):
                with v3.VListItem(v_for="r in results", key="r.id"):
                    with html.Div(classes="d-flex align-center"):
                        with html.Div(classes="flex-grow-1"):
                            html.Div("{{ r.name }}", classes="text-body-2")
                            html.Div("{{ r.kind }}", classes="text-caption text-medium-emphasis")
                        v3.VBtn(icon="mdi-eye", size="small", variant="text",
                                click=(self.show_result, "[r.id]"))
                        with html.A(href=("'" + ROUTE + "/download/' + r.id",), download=True):
                            v3.VBtn(icon="mdi-download", size="small", variant="text")

    def _mask_fields(self, roi: bool = False):
        label = "Region of interest (optional)" if roi else "Lesion mask"
        key = "roi_id" if roi else "mask_id"
        v3.VSelect(v_model=(key,), items=("segmentation_items",), label=label, density="compact", clearable=roi)
        if roi:
            return
        with html.Div(classes="d-flex align-center ga-2 mb-2"):
            v3.VBtn("New mask", click=self.new_mask, size="small", id="mdf-new-mask", __properties=[("id", "id")])
            with v3.VBtnToggle(v_model=("brush",), density="compact", mandatory=True, id="mdf-brush",
                               __properties=[("id", "id")]):
                v3.VBtn(icon="mdi-cursor-default", value="none", size="small")
                v3.VBtn(icon="mdi-brush", value="paint", size="small")
                v3.VBtn(icon="mdi-eraser", value="erase", size="small")
        v3.VSlider(v_model=("brush_size",), min=1, max=30, step=1, label="Brush %", density="compact",
                   hide_details=True, thumb_label=True)

    def _task_fields(self, task: str):
        if task == "denoise":
            v3.VTextField(v_model=("noise_level",), label="Noise level, HU (0: estimate)", type="number",
                          density="compact")
            v3.VTextField(v_model=("strength",), label="Strength", type="number", density="compact")
        elif task == "anomaly":
            v3.VTextField(v_model=("threshold",), label="Threshold (0: the engine's)", type="number", density="compact")
            self._mask_fields(roi=True)
        elif task == "inpaint":
            self._mask_fields()
            v3.VCheckbox(v_model=("inpaint_lesion",), label="Draw a lesion (lesion ControlNet) instead of healthy tissue",
                         density="compact", hide_details=True)
        elif task == "lesion":
            self._mask_fields()
            v3.VSelect(v_model=("controlnet",), items=("controlnet_items",), label="ControlNet", density="compact")
        elif task == "superres":
            v3.VTextField(v_model=("factor",), label="Factor along the slice axis", type="number", density="compact")
            v3.VTextField(v_model=("sr_spacing",), label="Or target slice spacing, mm (0: use the factor)",
                          type="number", density="compact")
            v3.VSelect(v_model=("controlnet",), items=("controlnet_items",), label="ControlNet", density="compact")
        elif task == "synthesize":
            with v3.VRow(dense=True):
                for axis in "xyz":
                    with v3.VCol():
                        v3.VTextField(v_model=(f"size_{axis}",), label=axis.upper(), type="number", density="compact")
            v3.VTextField(v_model=("synth_spacing",), label="Spacing, mm (0: the model's)", type="number",
                          density="compact")
            v3.VSelect(v_model=("anatomy_id",), items=("segmentation_items",), label="Anatomy segmentation (optional)",
                       density="compact", clearable=True)


def main(argv: list[str] | None = None) -> None:
    from trame.app import get_server

    server = get_server("meddifffm", client_type="vue3")
    cli = server.cli
    cli.description = "MedDiffFM in a web browser (trame-slicer)."
    cli.add_argument("--input", help="a CT file or DICOM folder to open at start")
    cli.add_argument("--engine-python", help="the Python that runs the engine (default: this one)")
    cli.add_argument("--temp-dir", help="where each run writes its temporary files (default: the system's)")
    args, _ = cli.parse_known_args(argv)
    if not os.environ.get("DISPLAY"):
        # No X server (a GPU server, a container, CI): render with EGL directly instead of failing over X first.
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    app = MedDiffFMWebApp(server, engine_python=args.engine_python, temp_root=args.temp_dir)
    if args.input:
        app.state.path = args.input
        app.open_path()

    def ready(**_):
        print(f"MedDiffFM web: serving on http://{host}:{server.port}/", flush=True)

    host = args.host if args.host != "localhost" else "127.0.0.1"
    server.controller.on_server_ready.add(ready)
    server.start(host=host, port=args.port, open_browser=False, timeout=0, show_connection_info=False)


if __name__ == "__main__":
    main()
