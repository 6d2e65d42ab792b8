"""Run the engine's CLI in a background process and read its JSON progress lines without blocking.

The engine (``python -m MedDiffFMLogic <command> ... --progress json``) writes one JSON object per line
on stdout::

    {"stage": "sampling", "step": 3, "total": 50, "message": "t=940"}   while working
    {"stage": "done", "outputs": {"image": "/tmp/out.nrrd"}}             once, at the end
    {"stage": "error", "error": "what went wrong and what to do"}        once, on failure (exit code 1)

Two reader threads drain stdout and stderr into a queue, so a full pipe never stalls the engine and the
caller never waits on a read: in Slicer a QTimer calls ``poll()``; scripts and tests call ``wait()``.
``cancel()`` stops the whole process tree (Slicer's PythonSlicer is a launcher that starts the real
interpreter as a child, so killing the direct child alone would leave the engine running). A GUI calls
``cancel(wait=False)``: it asks the tree to stop and returns at once; a background thread kills what is
still alive after the grace period, and the run shows as ``finished`` in ``poll()`` once it is reaped.

No qt, vtk or slicer here, so this module is tested with plain pytest.
"""

from __future__ import annotations

import collections
import importlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Union

ENGINE_PACKAGE = "MedDiffFMLogic"
STDERR_LINES_KEPT = 200


# ------------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Progress:
    stage: str
    step: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float | None:
        """Done fraction of the current stage, or None when the stage has no known length."""
        return min(max(self.step / self.total, 0.0), 1.0) if self.total > 0 else None

    @property
    def text(self) -> str:
        count = f" {self.step}/{self.total}" if self.total > 0 else ""
        return f"{self.stage}{count}" + (f" ({self.message})" if self.message else "")


@dataclass(frozen=True)
class Done:
    outputs: dict[str, str]


@dataclass(frozen=True)
class Failed:
    error: str


@dataclass(frozen=True)
class Log:
    text: str
    stream: str = "stdout"


@dataclass(frozen=True)
class Exited:
    """The process ended (always the last event of a run)."""

    returncode: int


Event = Union[Progress, Done, Failed, Log, Exited]


def parse_line(line: str) -> Progress | Done | Failed | Log:
    """One stdout line of the engine as an event; anything that is not a protocol object is a Log."""
    text = line.rstrip("\r\n")
    try:
        record = json.loads(text)
    except ValueError:
        return Log(text)
    if not isinstance(record, dict) or not isinstance(record.get("stage"), str):
        return Log(text)
    stage = record["stage"]
    if stage == "done":
        outputs = record.get("outputs") or {}
        return Done({str(k): str(v) for k, v in outputs.items()} if isinstance(outputs, dict) else {})
    if stage == "error":
        return Failed(str(record.get("error") or "the engine reported an error without a message"))
    try:
        step, total = int(record.get("step", 0)), int(record.get("total", 0))
    except (TypeError, ValueError):
        return Log(text)
    return Progress(stage, step, total, str(record.get("message") or ""))


# ------------------------------------------------------------------------------------------ results


class EngineError(RuntimeError):
    """The engine failed; the message is the engine's own, meant for the user (no traceback)."""


class Cancelled(EngineError):
    """The user cancelled the run."""


# Hints for failures that end in a traceback rather than in the engine's own error line.
_HINTS = (
    ("out of memory", "the GPU ran out of memory: choose the CPU device or the 'fast' preset, "
                      "or crop the volume first"),
    ("not enough memory", "the computer ran out of memory: crop or resample the volume first"),
    ("No module named", "a Python package the engine needs is missing: click Apply again to install "
                        "the dependencies, then restart Slicer"),
)


def summarise_failure(stderr_lines: Iterable[str], returncode: int) -> str:
    """A one-line message for a run that died without a JSON error line: the last line of its
    traceback (the exception itself), with a hint where one is known."""
    lines = [line.strip() for line in stderr_lines if line.strip()]
    last = lines[-1] if lines else ""
    if not last:
        if returncode < 0:
            return f"the engine was stopped by signal {-returncode}"
        return f"the engine stopped with exit code {returncode} and no message"
    for needle, hint in _HINTS:
        if needle.lower() in last.lower():
            return f"{last} ({hint})"
    return last


# ------------------------------------------------------------------------------------------- runner


def engine_root(*candidates: str | os.PathLike) -> Path:
    """The folder that holds the engine package: beside the module in an installed extension, one
    level up in the source tree."""
    here = Path(__file__).resolve().parent  # .../MedDiffFM/MedDiffFMLib
    return find_engine_root([*map(Path, candidates), here.parent, here.parent.parent])


def find_engine_root(folders: Iterable[str | os.PathLike]) -> Path:
    """The first of `folders` that holds the engine package; EngineError saying how to fix it if none."""
    for folder in map(Path, folders):
        if (folder / ENGINE_PACKAGE / "__main__.py").is_file():
            return folder.resolve()
    raise EngineError(
        f"the MedDiffFM engine ({ENGINE_PACKAGE}) was not found beside the module: reinstall the extension, "
        "or, in a source checkout, add <checkout>/MedDiffFM (the folder that holds MedDiffFM.py, not the "
        "checkout itself) to Slicer's module paths (Edit > Application Settings > Modules)"
    )


def import_engine_module(name: str, root: str | os.PathLike | None = None):
    """One of the engine's torch-free modules ("settings.commands", "anatomy"), imported into this process
    from the folder the runs start the engine from (engine_root), so that the declarations the module
    reads are those of the engine it runs. That folder is already on sys.path in an installed extension
    (the module's own folder); in a source checkout it is the checkout, put first here as the runs put
    it first on PYTHONPATH. EngineError when another copy of the package was imported first."""
    folder = engine_root(*([root] if root else []))
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    module = importlib.import_module(f"{ENGINE_PACKAGE}.{name}")
    imported = Path(sys.modules[ENGINE_PACKAGE].__path__[0]).resolve().parent
    if imported != folder:
        raise EngineError(
            f"another copy of the engine ({imported / ENGINE_PACKAGE}) shadows the one the module runs "
            f"({folder / ENGINE_PACKAGE}): uninstall it from Slicer's Python (pip uninstall meddifffm) or "
            "take it off PYTHONPATH, then restart Slicer"
        )
    return module


def engine_command(python: str | os.PathLike, command: str, arguments: Iterable[str]) -> list[str]:
    return [str(python), "-m", ENGINE_PACKAGE, command, *[str(a) for a in arguments], "--progress", "json"]


def engine_environment(base: dict[str, str] | None, root: str | os.PathLike) -> dict[str, str]:
    """The environment of an engine run: `base` (Slicer's startup environment, or ours) with the engine
    folder first on PYTHONPATH and unbuffered output, so progress lines arrive as they are written."""
    env = dict(os.environ if base is None else base)
    paths = [str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(root)]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


@dataclass
class RunState:
    returncode: int | None = None
    outputs: dict[str, str] | None = None
    error: str | None = None
    cancelled: bool = False
    last_progress: Progress | None = None
    stderr: collections.deque = field(default_factory=lambda: collections.deque(maxlen=STDERR_LINES_KEPT))


class EngineProcess:
    """One engine run in a child process. Start it, then poll() (GUI) or wait() (scripts)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None):
        self.args = [str(a) for a in args]
        self.env = env
        self.cwd = cwd
        self.state = RunState()
        self._events: queue.Queue = queue.Queue()
        self._proc: subprocess.Popen | None = None
        self._readers: list[threading.Thread] = []
        self._exited = False  # Exited has been delivered to the caller (poll/wait)
        self._reaped = False  # the process has ended and its pipes are drained (reaper thread)
        self._on_reaped: list[Callable[[], None]] = []
        self._killer: threading.Thread | None = None  # kills what a cancel's SIGTERM left, after the grace period
        self._lock = threading.Lock()
        self.started_at: float | None = None
        self.seconds: float | None = None

    # -- life cycle

    def start(self) -> "EngineProcess":
        if self._proc is not None:
            raise RuntimeError("this engine process was already started")
        kwargs: dict = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # its own process group: cancel can signal the whole group
        try:
            self._proc = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=self.env, cwd=self.cwd, text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs,
            )
        except OSError as exc:
            raise EngineError(f"could not start the engine ({self.args[0]}): {exc}") from exc
        self.started_at = time.monotonic()
        out = threading.Thread(target=self._read, args=(self._proc.stdout, "stdout"), daemon=True)
        err = threading.Thread(target=self._read, args=(self._proc.stderr, "stderr"), daemon=True)
        self._readers = [out, err]
        for t in self._readers:
            t.start()
        threading.Thread(target=self._reap, daemon=True).start()
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and not self._exited

    @property
    def finished(self) -> bool:
        """True once the process has ended and every line it wrote has been delivered by poll()."""
        return self._exited

    @property
    def succeeded(self) -> bool:
        s = self.state
        return self._exited and not s.cancelled and s.returncode == 0 and s.outputs is not None

    def _read(self, stream, name: str) -> None:
        for line in iter(stream.readline, ""):
            if name == "stdout":
                self._events.put(parse_line(line))
            else:
                self._events.put(Log(line.rstrip("\r\n"), "stderr"))
        stream.close()

    def _reap(self) -> None:
        assert self._proc is not None
        code = self._proc.wait()
        for t in self._readers:
            t.join()
        with self._lock:
            killer = self._killer
        if killer is not None:  # a cancelled run ends when its whole tree is gone, not just the first process
            killer.join()
        with self._lock:
            self._reaped = True
            callbacks, self._on_reaped = self._on_reaped, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a clean-up hook must not keep Exited from the caller
                pass
        self._events.put(Exited(code))

    def when_reaped(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from the reaper thread) once the process has ended, or now if it has."""
        with self._lock:
            if not self._reaped:
                self._on_reaped.append(callback)
                return
        callback()

    # -- reading

    def poll(self) -> list[Event]:
        """Every event that arrived since the last call, without waiting."""
        events = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return events
            self._record(event)
            events.append(event)

    def wait(self, timeout: float | None = None, on_event: Callable[[Event], None] | None = None,
             interval: float = 0.05) -> "EngineProcess":
        """Block until the process ends, passing each event to on_event; raises TimeoutError (after
        cancelling the run) when `timeout` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._exited:
            try:
                event = self._events.get(timeout=interval)
            except queue.Empty:
                if deadline is not None and time.monotonic() > deadline:
                    self.cancel()
                    raise TimeoutError(f"the engine did not finish within {timeout} s; it was stopped")
                continue
            self._record(event)
            if on_event is not None:
                on_event(event)
        return self

    def _record(self, event: Event) -> None:
        s = self.state
        if isinstance(event, Progress):
            s.last_progress = event
        elif isinstance(event, Done):
            s.outputs = event.outputs
        elif isinstance(event, Failed):
            s.error = event.error
        elif isinstance(event, Log) and event.stream == "stderr":
            s.stderr.append(event.text)
        elif isinstance(event, Exited):
            s.returncode = event.returncode
            self.seconds = time.monotonic() - (self.started_at or time.monotonic())
            self._exited = True

    # -- outcome

    def check(self) -> dict[str, str]:
        """The outputs of a finished run; raises Cancelled or EngineError (with the engine's message)."""
        if not self._exited:
            raise RuntimeError("the engine is still running")
        s = self.state
        if s.cancelled:
            raise Cancelled("cancelled")
        if s.returncode == 0 and s.outputs is not None:
            return s.outputs
        if s.error:
            raise EngineError(s.error)
        if s.returncode == 0:
            raise EngineError("the engine ended without reporting its outputs")
        raise EngineError(summarise_failure(s.stderr, s.returncode if s.returncode is not None else -1))

    # -- cancelling

    def cancel(self, grace: float = 3.0, wait: bool = True) -> None:
        """Stop the engine and every process it started: ask them to stop now, kill what is left after
        `grace` seconds. wait=True returns once the run is reaped and every line delivered (scripts);
        wait=False returns at once (a GUI thread): keep calling poll() until `finished`."""
        with self._lock:
            if self._proc is None or self._exited:
                return
            if not self.state.cancelled:
                self.state.cancelled = True
                self._killer = stop_tree(self._proc, grace)
        if wait:
            # Drain so that `finished` turns true and nothing is left in the pipes.
            self.wait(timeout=None)


def stop_tree(proc: subprocess.Popen, grace: float = 3.0) -> threading.Thread:
    """Ask a process and all its descendants to terminate, and return at once; a background thread
    kills whatever is still alive after `grace` seconds. Returns that thread (join it to wait)."""
    victims = _terminate_tree(proc)
    killer = threading.Thread(target=_kill_survivors, args=(proc, victims, grace), daemon=True)
    killer.start()
    return killer


def kill_tree(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """stop_tree, waiting until the whole tree is gone (for scripts; a GUI uses stop_tree)."""
    stop_tree(proc, grace).join()


def _terminate_tree(proc: subprocess.Popen):
    """SIGTERM (TerminateProcess on Windows) to the process and its descendants. Returns the descendants
    psutil found (None without psutil), for _kill_survivors to watch."""
    # Once reaped, the pid may belong to an unrelated process: then only the process group is ours.
    reaped = proc.returncode is not None
    try:
        import psutil
    except ImportError:
        psutil = None
    children = None
    if psutil is not None and not reaped:
        try:
            # Listed before anything stops: once the launcher dies, its children are no longer under it.
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for p in children:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
    if os.name != "nt":
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the group started with start_new_session, leader included
        except (ProcessLookupError, PermissionError):
            pass
    elif children is not None:
        proc.terminate()
    return children


def _kill_survivors(proc: subprocess.Popen, children, grace: float) -> None:
    """Runs in a background thread: after `grace` seconds, kill what _terminate_tree could not stop."""
    deadline = time.monotonic() + grace
    if os.name == "nt" and children is None and proc.returncode is None:
        # Without psutil: taskkill /T finds the tree from the (still running) parent.
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True, check=False)
    if children:  # not our children: psutil polls them
        import psutil

        _, alive = psutil.wait_procs(children, timeout=grace)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=1.0)
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
    except subprocess.TimeoutExpired:
        proc.kill()
    if os.name != "nt":
        alive = _group_alive(proc.pid)
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = _group_alive(proc.pid)
        if alive:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group after the grace period
            except (ProcessLookupError, PermissionError):
                pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_python() -> str:
    """The interpreter for engine runs outside Slicer (Slicer passes its PythonSlicer instead)."""
    return sys.executable
