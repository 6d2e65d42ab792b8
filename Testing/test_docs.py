"""Issue 15, "contradictions to remove": what the README and the docs state is checked against what the
code and the committed results say: every `meddifffm` option they show exists for its command, model
figures match the bundled model files, the demo's time matches its committed summary, the JSON example
matches what the engine prints, and the two-minute training recipe's config is what it describes."""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

import pytest

from MedDiffFMLogic.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "MedDiffFM" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MODELS = ROOT / "MedDiffFMLogic" / "models"


def _code(text: str) -> list[str]:
    """The code in a Markdown text, one logical line each: fenced and indented blocks (backslash
    continuations joined) and inline code spans (also those broken across lines)."""
    out, block, prose, fenced = [], [], [], False

    def spans() -> None:
        out.extend(re.findall(r"`([^`]+)`", " ".join(prose)))
        prose.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            spans()
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            spans()
            block.append(line.strip())
            if not line.rstrip().endswith("\\"):
                out.append(" ".join(part.rstrip("\\").strip() for part in block))
                block = []
            continue
        if line.strip():
            prose.append(line.strip())
        else:
            spans()
    spans()
    return out


# `meddifffm CMD ...`, `python -m MedDiffFMLogic CMD ...` (and under torchrun: `-m MedDiffFMLogic CMD`).
_COMMAND = re.compile(r"(?:\bmeddifffm|-m MedDiffFMLogic)\s+(\S+)(.*)")


def _commands(doc: Path) -> list[tuple[str, list[str], str]]:
    """(command, its --options, the code line) for every meddifffm command line shown in doc."""
    found = []
    for line in _code(doc.read_text(encoding="utf-8")):
        for match in _COMMAND.finditer(line):
            rest = match.group(2).split(" #")[0]  # a shell comment is prose
            rest = re.split(r"\s(?:&&|;|>|2>&1)\s", rest)[0]  # what follows the command
            options = [re.sub(r"[\[\]|,.)]+$", "", token.strip("[]()|")).split("=")[0]
                       for token in rest.split() if token.lstrip("[(").startswith("--")]
            found.append((match.group(1), [o for o in options if o], line))
    return found


def test_every_option_the_docs_show_exists_for_its_command():
    parser = build_parser()
    parsers = parser.command_parsers()
    top = {s for action in parser._actions for s in action.option_strings}
    wrong, seen = [], set()
    for doc in DOCS:
        for command, options, line in _commands(doc):
            if command.startswith("-"):  # meddifffm --version, meddifffm --help
                if command not in top:
                    wrong.append(f"{doc.name}: {command} ({line})")
                continue
            if not re.fullmatch(r"[a-z][a-z-]*", command):  # COMMAND, <command>, ...: placeholders;
                continue  # "meddifffm train: interrupted": a message
            if command not in parsers:
                wrong.append(f"{doc.name}: no command {command!r} ({line})")
                continue
            seen.add(command)
            known = {s for action in parsers[command]._actions for s in action.option_strings}
            wrong += [f"{doc.name}: meddifffm {command} has no {o} ({line})" for o in options if o not in known]
    assert not wrong, "\n".join(wrong)
    assert {"denoise", "anomaly", "train", "finetune", "phantom", "synthesize"} <= seen  # the check ran


def test_the_option_check_catches_a_wrong_option(tmp_path, monkeypatch):
    doc = tmp_path / "doc.md"
    doc.write_text("Run\n\n    meddifffm denoise ct.nii.gz -o out.nii.gz \\\n        --nois-level 20\n\n"
                   "and `meddifffm train --config tiny --step 8`.\n")
    assert [(c, o) for c, o, _ in _commands(doc)] == [("denoise", ["--nois-level"]), ("train", ["--config", "--step"])]
    monkeypatch.setattr(__import__(__name__), "DOCS", [doc])
    with pytest.raises(AssertionError, match=r"(?s)no --nois-level.*no --step"):
        test_every_option_the_docs_show_exists_for_its_command()


def test_every_option_the_docs_name_alone_exists():
    """An option named on its own in the text (`--window-batch`) is one of meddifffm's, or of the other
    programs in the repository (the web app, the Slicer batch script, the benchmarks), whose parsers
    name it literally; the web app's --host and --port are trame's own."""
    parser = build_parser()
    known = {s for p in [parser, *parser.command_parsers().values()] for a in p._actions for s in a.option_strings}
    known |= {"--host", "--port"}
    others = " ".join(path.read_text(encoding="utf-8") for folder in ("MedDiffFMWeb", "MedDiffFM/MedDiffFMLib", "benchmarks")
                      for path in (ROOT / folder).glob("*.py"))
    wrong = []
    for doc in DOCS:
        for code in _code(doc.read_text(encoding="utf-8")):
            match = re.fullmatch(r"(--[a-z][a-z0-9-]*)(?:[ =]\S+)?", code.strip())
            if match and match.group(1) not in known and f'"{match.group(1)}"' not in others:
                wrong.append(f"{doc.name}: {code}")
    # docs/errors.md shows a misspelt option on purpose.
    assert wrong == ["errors.md: --step"], wrong


def _defaults(command: str) -> dict[str, object]:
    parser = build_parser().command_parsers()[command]
    return {s: action.default for action in parser._actions for s in action.option_strings}


def test_defaults_the_readme_states_are_the_parsers():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stated = dict(re.findall(r"`(--[a-z-]+)`(?: mm)? \(default ([0-9.]+)", readme))
    assert {"--overlap", "--margin"} <= set(stated)
    for option, value in stated.items():
        commands = [c for c in build_parser().command_parsers() if option in _defaults(c)]
        assert commands, option
        for command in commands:
            assert float(_defaults(command)[option]) == float(value), (command, option)


def _parameters(weights: Path) -> int:
    """Number of parameters in a safetensors file, from its header alone."""
    with open(weights, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    return sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")


def _card(name: str) -> tuple[dict, float]:
    card = json.loads((MODELS / name / f"{name}.json").read_text(encoding="utf-8"))
    return card, _parameters(MODELS / name / card["weights"]) / 1e6


def test_model_figures_in_the_docs_match_the_bundled_models():
    base, base_m = _card("meddifffm-base-demo")
    controlnets = [_card(name)[1] for name in ("meddifffm-superres-demo", "meddifffm-lesion-demo")]
    window = base["architecture"]["window_size"]
    spacing = base["working_spacing"]
    texts = {doc: doc.read_text(encoding="utf-8") for doc in (ROOT / "README.md", ROOT / "MedDiffFM" / "README.md",
                                             ROOT / "docs" / "training.md")}
    for doc, text in texts.items():
        # Every parameter count stated for the bundled (SMALL) network is the base model's.
        counts = re.findall(r"([0-9.]+) ?M(?:-| )parameter", text)
        assert counts, doc
        assert all(float(c) == round(base_m, 1) for c in counts), (doc, counts, base_m)
    assert f"each ControlNet adds {round(controlnets[0], 1)} M" in texts[ROOT / "MedDiffFM" / "README.md"]
    assert all(round(m, 1) == round(controlnets[0], 1) for m in controlnets)
    # Window size and working spacing as the card says, wherever the docs describe the bundled models.
    assert f"at {spacing[0]:g} mm with {window}³" in texts[ROOT / "README.md"]
    assert f"{window}^3 voxels for the bundled models" in texts[ROOT / "MedDiffFM" / "README.md"]
    assert f"{window}³ windows at {spacing[0]:g} mm" in texts[ROOT / "docs" / "training.md"]
    # Windows per network call: at most what the engine batches.
    from MedDiffFMLogic.sampling import AUTO_BATCH_MAX as MAX_WINDOW_BATCH

    for doc in (ROOT / "README.md", ROOT / "MedDiffFM" / "README.md"):
        assert f"at most {MAX_WINDOW_BATCH}" in texts[doc] or f"up to {MAX_WINDOW_BATCH} windows" in texts[doc], doc
        assert "one window at a time" not in texts[doc]


def test_the_demo_time_in_the_readme_is_the_committed_summary():
    summary = json.loads((ROOT / "benchmarks" / "results" / "demo_summary.json").read_text(encoding="utf-8"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"the demo itself (\d+) s by `summary\.json`'s `seconds_total`[^:]*: ([^)]*)\)", readme)
    assert match, "the README no longer states the demo's time by stage"
    assert abs(int(match.group(1)) - summary["seconds_total"]) <= 0.5
    names = {"super-resolution": "superres", "synthesis": "synthesize"}
    stages = {names.get(n, n): float(s) for n, s in re.findall(r"([a-z-]+) ([0-9.]+)(?: s)?", match.group(2))}
    assert set(stages) == set(summary["seconds_per_stage"])
    for stage, seconds in stages.items():
        assert abs(seconds - summary["seconds_per_stage"][stage]) <= 0.5, stage
    # Said once: the demo's time is not also given as one denoise's.
    minutes = re.findall(r"\d+ min \d+ s", readme)
    assert len(minutes) == len(set(minutes)), minutes


def test_the_json_example_is_what_the_engine_prints():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```json\n(.*?)```", readme, re.S).group(1)
    lines = [json.loads(line) for line in block.splitlines()]
    done = next(line for line in lines if line["stage"] == "done")
    # The output path as given to -o in the README's denoise example (the engine prints it as given).
    example = re.search(r"meddifffm denoise \S+ -o (\S+)", readme).group(1)
    assert done["outputs"] == {"image": example}
    assert not Path(example).is_absolute()


def test_auto_device_order_is_what_the_docs_say(monkeypatch):
    from MedDiffFMLogic import device

    monkeypatch.setattr(device, "_cuda_works", lambda: False)
    monkeypatch.setattr(device, "_mps_works", lambda: True)
    assert device.resolve_device("auto").type == "mps"
    monkeypatch.setattr(device, "_mps_works", lambda: False)
    assert device.resolve_device("auto").type == "cpu"
    assert "auto: CUDA if built and working, then MPS,\nthen CPU" in (ROOT / "README.md").read_text(encoding="utf-8")
    slicer = (ROOT / "MedDiffFM" / "README.md").read_text(encoding="utf-8")
    assert "then an Apple GPU\n(MPS), else the CPU" in slicer
    assert "silently uses the CPU when" not in slicer  # without a word about MPS


def test_the_two_minute_training_recipe():
    from MedDiffFMLogic.training.commands import resolve_config
    from MedDiffFMLogic.training.config import load_config

    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    section = text.split("## Try it in two minutes", 1)[1].split("\n## ", 1)[0]
    command = re.search(r"meddifffm train --config (\S+) --output (\S+)", section)
    config = load_config(resolve_config(command.group(1)))
    phantoms = config.data.phantoms
    regions = len(phantoms.regions)
    train = regions * (phantoms.seeds[1] - phantoms.seeds[0])
    val = regions * (phantoms.val_seeds[1] - phantoms.val_seeds[0])
    assert f"for {config.steps} steps on {train} small phantoms" in section
    assert f"validates on {val} held-apart" in section and val > 0
    assert f"--steps {2 * config.steps} --resume" in section
    # The sections of training.md are not numbered (they were, inconsistently).
    assert not re.search(r"^#+ \d", text, re.M)
    # The README links docs/training.md as what it is: an existing recipe.
    assert "once it exists" not in (ROOT / "README.md").read_text(encoding="utf-8")
