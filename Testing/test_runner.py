"""The module's background runner: the engine's real JSON progress stream, failures without a
traceback for the user, and Cancel killing the whole process tree."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MedDiffFM"))

from MedDiffFMLib import runner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def poll_until_exit(process: runner.EngineProcess, timeout: float = 120.0) -> list:
    """Drive the process as the GUI's timer does: poll() without waiting, until it has exited."""
    events, deadline = [], time.monotonic() + timeout
    while not process.finished:
        assert time.monotonic() < deadline, "the process did not end"
        events += process.poll()
        time.sleep(0.02)
    return events + process.poll()


def ended(pid: int, within: float = 5.0) -> bool:
    """The process is gone or a zombie (a process killed an instant ago may still be closing down)."""
    import psutil

    deadline = time.monotonic() + within
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_the_runner_reads_the_engines_real_progress_stream(tmp_path, tiny_model_card):
    assert runner.engine_root() == ROOT
    target = tmp_path / "synth.nrrd"
    args = runner.engine_command(sys.executable, "synthesize", [
        "-o", target, "--model", tiny_model_card, "--size", "12,10,8", "--steps", "3", "--device", "cpu",
    ])
    assert args[-2:] == ["--progress", "json"]
    process = runner.EngineProcess(args, env=runner.engine_environment(None, ROOT), cwd=tmp_path).start()
    events = poll_until_exit(process)

    progress = [e for e in events if isinstance(e, runner.Progress) and e.stage == "synthesize"]
    assert [p.step for p in progress] == [0, 1, 2, 3] and {p.total for p in progress} == {3}
    assert progress[-1].fraction == 1.0 and progress[-1].text.startswith("synthesize 3/3")
    done = [e for e in events if isinstance(e, runner.Done)]
    assert done == [runner.Done({"image": str(target)})]
    assert isinstance(events[-1], runner.Exited) and events[-1].returncode == 0
    assert not [e for e in events if isinstance(e, runner.Failed)]
    assert process.succeeded and process.check() == {"image": str(target)} and target.is_file()
    assert process.seconds is not None and process.seconds > 0


def test_a_crash_without_an_error_line_is_summarised_with_a_hint():
    crash = "import sys; print('working'); raise RuntimeError('CUDA out of memory. Tried to allocate 2.00 GiB')"
    process = runner.EngineProcess([sys.executable, "-c", crash]).start().wait(timeout=60)
    with pytest.raises(runner.EngineError) as error:
        process.check()
    message = str(error.value)
    assert message.startswith("RuntimeError: CUDA out of memory") and "CPU device" in message
    assert "Traceback" not in message
    assert runner.summarise_failure([], -9) == "the engine was stopped by signal 9"


def test_protocol_lines_and_other_output_are_told_apart():
    assert runner.parse_line('{"stage": "denoise", "step": 2, "total": 4, "message": "t=10"}\n') == \
        runner.Progress("denoise", 2, 4, "t=10")
    assert runner.parse_line('{"stage": "done", "outputs": {"image": "/a.nrrd"}}') == runner.Done({"image": "/a.nrrd"})
    assert runner.parse_line('{"stage": "error", "error": "bad mask"}') == runner.Failed("bad mask")
    assert runner.parse_line("Loading model...") == runner.Log("Loading model...")
    assert runner.parse_line('{"step": 1}') == runner.Log('{"step": 1}')
    assert runner.parse_line('{"stage": "x", "step": "many"}') == runner.Log('{"stage": "x", "step": "many"}')
    assert runner.Progress("load", 0, 0).fraction is None


def test_cancel_kills_the_engine_and_everything_it_started(tmp_path):
    psutil = pytest.importorskip("psutil")
    # A stand-in with the shape of PythonSlicer: a launcher whose child does the work.
    script = tmp_path / "launcher.py"
    script.write_text(textwrap.dedent("""
        import json, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print(json.dumps({"stage": "child", "step": child.pid, "total": 0}), flush=True)
        time.sleep(120)
    """))
    process = runner.EngineProcess([sys.executable, str(script)]).start()
    child_pid = _reported_child(process)
    started = time.monotonic()
    process.cancel(grace=2.0)
    assert time.monotonic() - started < 10
    assert process.finished and process.state.cancelled
    for pid in (process.pid, child_pid):
        assert ended(pid)
    with pytest.raises(runner.Cancelled):
        process.check()


def test_wait_with_a_timeout_stops_the_run():
    process = runner.EngineProcess([sys.executable, "-c", "import time; time.sleep(60)"]).start()
    with pytest.raises(TimeoutError):
        process.wait(timeout=0.5)
    assert process.finished and process.state.cancelled


def test_progress_lines_arrive_while_the_engine_runs():
    """Unbuffered output: the first line is seen long before the process ends."""
    code = "import json, time; print(json.dumps({'stage': 's', 'step': 0, 'total': 1})); time.sleep(5)"
    env = runner.engine_environment(None, ROOT)
    process = runner.EngineProcess([sys.executable, "-c", code], env=env).start()
    deadline = time.monotonic() + 4
    seen = []
    while not seen and time.monotonic() < deadline:
        seen = [e for e in process.poll() if isinstance(e, runner.Progress)]
        time.sleep(0.02)
    assert seen and not process.finished
    process.cancel()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)  # the engine beside the module comes first


def test_cancel_without_waiting_returns_at_once_and_the_tree_still_dies(tmp_path):
    """What the GUI thread calls (Cancel, scene close, module cleanup): it must not wait for the tree,
    not even for processes that ignore the polite request to stop."""
    psutil = pytest.importorskip("psutil")
    script = tmp_path / "stubborn.py"
    script.write_text(textwrap.dedent("""
        import json, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
                                  "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
        print(json.dumps({"stage": "child", "step": child.pid, "total": 0}), flush=True)
        time.sleep(120)
    """))
    process = runner.EngineProcess([sys.executable, str(script)]).start()
    child_pid = _reported_child(process)
    reaped = []
    started = time.monotonic()
    process.cancel(grace=1.5, wait=False)
    assert time.monotonic() - started < 0.5  # the GUI thread is free again at once
    process.when_reaped(lambda: reaped.append(time.monotonic()))
    assert not reaped and not process.finished  # the stubborn tree is still there, within its grace period
    events = poll_until_exit(process, timeout=30)
    assert isinstance(events[-1], runner.Exited) and process.state.cancelled and reaped
    assert time.monotonic() - started < 15
    for pid in (process.pid, child_pid):
        assert ended(pid)
    with pytest.raises(runner.Cancelled):
        process.check()
    process.cancel(wait=False)  # cancelling an ended run does nothing


def test_a_missing_engine_names_the_module_folder_to_add(tmp_path):
    with pytest.raises(runner.EngineError) as error:
        runner.find_engine_root([tmp_path, tmp_path / "MedDiffFM"])
    message = str(error.value)
    assert "<checkout>/MedDiffFM" in message and "MedDiffFM.py" in message and "not the checkout itself" in message
    assert runner.find_engine_root([tmp_path, ROOT]) == ROOT


def _reported_child(process) -> int:
    """The pid of the grandchild that the test's engine script reports as its "child" stage (30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline
        for event in process.poll():
            if isinstance(event, runner.Progress) and event.stage == "child":
                return event.step
        time.sleep(0.02)
