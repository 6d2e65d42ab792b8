"""The model catalogue as the module shows it: the engine's JSON model cards, read as plain JSON
(no torch in Slicer's GUI process). The folders and their order are the engine's
(MedDiffFMLogic.modelfiles.model_dirs): MEDDIFFFM_MODELS, the user folder, the bundled folder; a test
checks that both list the same models."""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path

CARD_FORMAT = "meddifffm-model-card/1"
ENV_VAR = "MEDDIFFFM_MODELS"
NOT_CLINICAL = "Demonstration model: not for clinical use."


@dataclass(frozen=True)
class Card:
    name: str
    path: Path
    data: dict
    source: str

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", ""))

    @property
    def task(self) -> str | None:
        """The task a ControlNet was trained for ("lesion", "superres"), None for a base model."""
        control = self.data.get("control") or {}
        return control.get("task") if isinstance(control, dict) else None

    @property
    def demonstration(self) -> bool:
        text = f"{self.data.get('intended_use', '')} {self.data.get('description', '')}".lower()
        return "not for clinical use" in text or "demonstration" in text


def user_models_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "meddifffm" / "models"


def model_dirs(engine_root: str | os.PathLike) -> list[tuple[Path, str]]:
    dirs = [(Path(d), ENV_VAR) for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d]
    return dirs + [(user_models_dir(), "user"), (Path(engine_root) / "MedDiffFMLogic" / "models", "bundled")]


def list_cards(engine_root: str | os.PathLike) -> list[Card]:
    """Every model card, first folder wins for a name (as in the engine)."""
    cards: dict[str, Card] = {}
    for folder, source in model_dirs(engine_root):
        if not folder.is_dir():
            continue
        for path in sorted([*folder.glob("*.json"), *folder.glob("*/*.json")]):
            try:
                data = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(data, dict) and data.get("format") == CARD_FORMAT and data.get("name"):
                cards.setdefault(str(data["name"]), Card(str(data["name"]), path, data, source))
    return list(cards.values())


def card_html(card: Card | None) -> str:
    """The card as the model selector shows it: what it is, where it came from, licence, intended use."""
    if card is None:
        return "<i>The engine's default model.</i>"
    d = card.data
    rows = [("Model", card.name), ("Kind", card.kind + (f" ({card.task})" if card.task else "")),
            ("Description", d.get("description", "")), ("Licence", d.get("licence", "")),
            ("Intended use", d.get("intended_use", "")), ("Source", f"{card.source}: {card.path}")]
    provenance = d.get("provenance") or {}
    if isinstance(provenance, dict) and provenance:
        rows.append(("Provenance", "; ".join(f"{k}: {v}" for k, v in provenance.items())))
    body = "".join(f"<b>{html.escape(k)}:</b> {html.escape(str(v))}<br>" for k, v in rows if v)
    if card.demonstration:
        body += f'<b style="color:#b00">{NOT_CLINICAL}</b>'
    return body
