"""Model files: safetensors weights beside a JSON model card, and the catalogue of known models.

A card holds the architecture, the normalisation, the working spacing, provenance, licence, intended
use and the weights' sha256. Loading verifies the sha256 and the safetensors header first and
refuses anything else: no model file is ever unpickled, so no code in a model file ever runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import ModelFileError
from .network import MedDiffFMNet, NetworkConfig
from .regions import HU_WINDOWS
from .schedules import ScheduleConfig

CARD_FORMAT = "meddifffm-model-card/1"
BUNDLED_DIR = Path(__file__).resolve().parent / "models"
ENV_VAR = "MEDDIFFFM_MODELS"
DEMO_LICENCE = "Apache-2.0"
DEMO_USE = "Demonstration and software testing only; not for clinical use."


def user_models_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "meddifffm" / "models"


@dataclass(frozen=True)
class ModelCard:
    name: str
    kind: str  # "base" (the denoiser) or "controlnet" (a task ControlNet for the base named in base_model)
    architecture: dict[str, Any]
    weights: str  # file name, relative to the card
    sha256: str
    schedule: dict[str, Any] = field(default_factory=lambda: dataclasses.asdict(ScheduleConfig()))
    normalisation: dict[str, Any] = field(
        default_factory=lambda: {"hu_windows": {k: list(v) for k, v in HU_WINDOWS.items()}, "range": [-1.0, 1.0]}
    )
    working_spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    licence: str = DEMO_LICENCE
    intended_use: str = DEMO_USE
    description: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    base_model: str | None = None
    control: dict[str, Any] | None = None  # ControlNetConfig of a "controlnet" card
    format: str = CARD_FORMAT

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["working_spacing"] = list(self.working_spacing)
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path) -> "ModelCard":
        if data.get("format") != CARD_FORMAT:
            raise ModelFileError(f"{source} is not a MedDiffFM model card (format {data.get('format')!r})")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [n for n in ("name", "kind", "architecture", "weights", "sha256") if n not in data]
        if missing:
            raise ModelFileError(f"model card {source} lacks {', '.join(missing)}")
        values = {k: v for k, v in data.items() if k in names}
        values["working_spacing"] = tuple(float(s) for s in values.get("working_spacing", (1.0, 1.0, 1.0)))
        return cls(**values)

    @property
    def training_phantoms(self) -> dict[str, Any]:
        """The phantom set the model was trained on (its training config's `data.phantoms`: size, spacing,
        patient_scale...), empty when the card does not say (a model trained on a manifest, or an old card)."""
        config = self.provenance.get("config") or {}
        return dict((config.get("data") or {}).get("phantoms") or {})

    def training_fov_mm(self) -> tuple[float, float] | None:
        """The in-plane field of view of its training phantoms (size x spacing), None when not known."""
        phantoms = self.training_phantoms
        try:
            return tuple(float(n) * float(s) for n, s in zip(phantoms["size"][:2], phantoms["spacing"][:2]))
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def network_config(self) -> NetworkConfig:
        try:
            return NetworkConfig.from_dict(self.architecture)
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"model {self.name!r} has an architecture this engine cannot build: {exc}") from exc


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write_bytes(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file private (0600); a model file gets the permissions of any new file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_model(
    module: torch.nn.Module, directory: str | os.PathLike, card: ModelCard | None = None, **card_fields: Any
) -> Path:
    """Write <directory>/<name>.safetensors and <name>.json; returns the card's path.

    Pass a card, or the card's fields (name, kind, architecture, ...); weights and sha256 are filled in.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fields_ = dataclasses.asdict(card) if card is not None else dict(card_fields)
    name = fields_["name"]
    weights = directory / f"{name}.safetensors"
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    # One metadata key only: safetensors writes the metadata in hash-map order, so with two keys the same
    # weights could give different bytes (and sha256) from run to run; the name lives in the card.
    _atomic_write_bytes(weights, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    fields_.update(weights=weights.name, sha256=sha256_of(weights))
    fields_.setdefault("format", CARD_FORMAT)
    final = ModelCard.from_dict(fields_, directory)
    card_path = directory / f"{name}.json"
    _atomic_write_bytes(card_path, lambda tmp: Path(tmp).write_text(final.to_json()))
    return card_path


def read_card(card_path: str | os.PathLike) -> ModelCard:
    card_path = Path(card_path)
    if not card_path.is_file():
        raise ModelFileError(f"model card {card_path} does not exist")
    try:
        data = json.loads(card_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"model card {card_path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFileError(f"model card {card_path} is not a JSON object")
    return ModelCard.from_dict(data, card_path)


def _check_safetensors_header(path: Path) -> None:
    """Refuse pickles and anything that is not a well-formed safetensors file, before parsing it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise ModelFileError(
            f"{path} is a pickle (a torch .pt/.pth/.ckpt file); pickles can run code and are never loaded. "
            "Convert the weights to safetensors."
        )
    if len(head) < 9:
        raise ModelFileError(f"{path} is truncated: it is too short to be a safetensors file")
    (header_len,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or header_len + 8 > size:
        raise ModelFileError(f"{path} is not a valid safetensors file (bad or truncated header)")


def verify_weights(card: ModelCard, card_path: Path) -> Path:
    """The weights file named by the card, after checking that it exists, is safetensors and matches sha256."""
    weights = (card_path.parent / card.weights).resolve()
    if weights.parent != card_path.parent.resolve():
        raise ModelFileError(f"model card {card_path} points outside its folder ({card.weights})")
    if not weights.is_file():
        raise ModelFileError(f"the weights of model {card.name!r} are missing: {weights}")
    _check_safetensors_header(weights)
    actual = sha256_of(weights)
    if actual != card.sha256:
        raise ModelFileError(
            f"the weights of model {card.name!r} ({weights}) do not match the sha256 in their card "
            f"(expected {card.sha256[:16]}..., found {actual[:16]}...): the file was changed or damaged; "
            "restore the original file"
        )
    return weights


def load_state(card_path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Verified tensors and card of a model file."""
    card_path = Path(card_path)
    card = read_card(card_path)
    weights = verify_weights(card, card_path)
    try:
        return load_file(str(weights)), card
    except Exception as exc:  # safetensors raises its own error types
        raise ModelFileError(f"could not read the weights {weights}: {exc}") from exc


def _load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], card: ModelCard) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(
            f"model {card.name!r} does not fit the architecture in its card (made for another architecture?): "
            f"{str(exc).splitlines()[0]}"
        ) from exc


def load_network(model: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[MedDiffFMNet, ModelCard]:
    """A base denoiser by catalogue name or card path, verified, in eval mode on `device`."""
    state, card = load_state(find_model(model))
    if card.kind != "base":
        raise ModelFileError(f"model {card.name!r} is a {card.kind}, not a base denoiser")
    net = MedDiffFMNet(card.network_config)
    _load_into(net, state, card)
    return net.to(device).eval(), card


def load_controlnet(model: str | os.PathLike, base: MedDiffFMNet, base_card: ModelCard,
                    device: torch.device | str = "cpu"):
    """A task ControlNet by name or card path, checked against the base it was trained on."""
    from .controlnet import ControlNetConfig, MedDiffFMControlNet

    state, card = load_state(find_model(model))
    if card.kind != "controlnet" or card.control is None:
        raise ModelFileError(f"model {card.name!r} is a {card.kind}, not a ControlNet")
    if card.base_model != base_card.name or card.network_config != base.config:
        raise ModelFileError(
            f"ControlNet {card.name!r} was trained on base model {card.base_model!r}, not {base_card.name!r}; "
            "pick the base model it was made for"
        )
    try:
        config = ControlNetConfig.from_dict(card.control)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"ControlNet {card.name!r} has an unknown control configuration: {exc}") from exc
    net = MedDiffFMControlNet(base.config, config)
    _load_into(net, state, card)
    return net.to(device).eval(), card


@dataclass(frozen=True)
class ModelEntry:
    name: str
    card_path: Path
    card: ModelCard | None
    source: str  # "bundled", "MEDDIFFFM_MODELS", "user", or "given"
    problem: str = ""


def model_dirs(extra: list[str | os.PathLike] | None = None) -> list[tuple[Path, str]]:
    """Folders searched for model cards, first match wins: given folders, MEDDIFFFM_MODELS, user, bundled."""
    dirs: list[tuple[Path, str]] = [(Path(d), "given") for d in extra or []]
    dirs += [(Path(d), ENV_VAR) for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d]
    dirs += [(user_models_dir(), "user"), (BUNDLED_DIR, "bundled")]
    return dirs


def list_models(extra: list[str | os.PathLike] | None = None) -> list[ModelEntry]:
    entries: dict[str, ModelEntry] = {}
    for folder, source in model_dirs(extra):
        if not folder.is_dir():
            continue
        for card_path in sorted([*folder.glob("*.json"), *folder.glob("*/*.json")]):
            try:
                data = json.loads(card_path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if not isinstance(data, dict) or data.get("format") != CARD_FORMAT:
                continue  # other JSON files (configs, logs) may sit beside the models
            try:
                card = ModelCard.from_dict(data, card_path)
                entry = ModelEntry(card.name, card_path, card, source)
            except ModelFileError as exc:
                entry = ModelEntry(card_path.stem, card_path, None, source, str(exc))
            entries.setdefault(entry.name, entry)
    return list(entries.values())


def find_model(model: str | os.PathLike, extra: list[str | os.PathLike] | None = None) -> Path:
    """The card path for a catalogue name, a card path, or a folder holding one card."""
    path = Path(model)
    if path.suffix == ".json" and path.is_file():
        return path
    if path.is_dir():
        cards = [p for p in path.glob("*.json") if _is_card(p)]
        if len(cards) == 1:
            return cards[0]
        raise ModelFileError(f"{path} holds {len(cards)} model cards; name one of them")
    if path.suffix in (".pt", ".pth", ".ckpt", ".bin", ".pkl"):
        raise ModelFileError(f"{path} looks like a pickle; only safetensors models with a JSON card are loaded")
    entries = list_models(extra)
    for entry in entries:
        if entry.name == str(model):
            if entry.card is None:
                raise ModelFileError(entry.problem)
            return entry.card_path
    known = ", ".join(e.name for e in entries) or "none"
    raise ModelFileError(
        f"no model named {str(model)!r} (known models: {known}); give a card path, or add a folder to {ENV_VAR}"
    )


def _is_card(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("format") == CARD_FORMAT


def trained_superres_factor(model: str | os.PathLike, default: int = 5) -> int:
    """The slab thickness (in working-grid slices) a super-resolution ControlNet was fine-tuned on, from
    the training config in its card's provenance; `default` (the paper's 5) when the card does not say."""
    config = read_card(find_model(model)).provenance.get("config") or {}
    factor = (config.get("data") or {}).get("lowres_factor")
    return int(factor) if isinstance(factor, int) and factor >= 2 else default
