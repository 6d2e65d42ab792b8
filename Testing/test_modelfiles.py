import json
import os
import pickle

import pytest
import torch

from MedDiffFMLogic.errors import ModelFileError
from MedDiffFMLogic.modelfiles import (
    BUNDLED_DIR, ENV_VAR, find_model, list_models, load_network, read_card, save_model, sha256_of,
    verify_weights,
)
from MedDiffFMLogic.network import SMALL, TINY


def _weights(card_path):
    return card_path.parent / read_card(card_path).weights


def test_save_and_load_round_trip_the_weights_and_card(tiny_model_card, tiny_net):
    net, card = load_network(tiny_model_card)
    assert card.name == "tiny-test" and card.kind == "base" and card.working_spacing == (4.0, 4.0, 4.0)
    assert card.sha256 == sha256_of(_weights(tiny_model_card))
    assert card.intended_use and card.licence and card.normalisation["hu_windows"]["chest"] == [-1400.0, 400.0]
    for (k, a), (k2, b) in zip(tiny_net.state_dict().items(), net.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert not net.training


def test_a_tampered_weights_file_is_refused(tiny_model_card):
    weights = _weights(tiny_model_card)
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256"):
        load_network(tiny_model_card)


def test_a_truncated_or_missing_weights_file_is_refused(tiny_model_card):
    weights = _weights(tiny_model_card)
    weights.write_bytes(weights.read_bytes()[:5])
    with pytest.raises(ModelFileError, match="truncated"):
        load_network(tiny_model_card)
    weights.unlink()
    with pytest.raises(ModelFileError, match="missing"):
        load_network(tiny_model_card)


class _Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pickle code ran')",))


def test_a_pickle_is_never_loaded_even_with_a_matching_sha256(tiny_model_card):
    weights = _weights(tiny_model_card)
    weights.write_bytes(pickle.dumps({"state": _Boom()}))
    card = json.loads(tiny_model_card.read_text())
    card["sha256"] = sha256_of(weights)
    tiny_model_card.write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="pickle"):
        load_network(tiny_model_card)
    torch.save({"a": torch.zeros(1)}, weights)  # torch's zip-pickle format
    card["sha256"] = sha256_of(weights)
    tiny_model_card.write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="pickle"):
        load_network(tiny_model_card)


def test_weights_for_another_architecture_are_refused(tiny_model_card):
    card = json.loads(tiny_model_card.read_text())
    card["architecture"] = SMALL.to_dict()
    tiny_model_card.write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="architecture"):
        load_network(tiny_model_card)


def test_a_card_pointing_outside_its_folder_is_refused(tiny_model_card, tmp_path):
    card = json.loads(tiny_model_card.read_text())
    card["weights"] = "../elsewhere.safetensors"
    tiny_model_card.write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="outside"):
        load_network(tiny_model_card)


def test_catalogue_finds_models_through_the_environment(tiny_model_card, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tiny_model_card.parent))
    entries = {e.name: e for e in list_models()}
    assert entries["tiny-test"].source == ENV_VAR
    assert find_model("tiny-test") == tiny_model_card
    assert find_model(tiny_model_card.parent) == tiny_model_card
    with pytest.raises(ModelFileError, match="tiny-test"):  # the error lists the known models
        find_model("no-such-model")
    with pytest.raises(ModelFileError, match="pickle"):
        find_model(tmp_path / "weights.pt")


def test_the_catalogue_skips_other_json_and_reports_broken_cards(tiny_model_card, monkeypatch):
    folder = tiny_model_card.parent
    (folder / "training-config.json").write_text(json.dumps({"lr": 1e-4}))
    broken = json.loads(tiny_model_card.read_text())
    del broken["sha256"]
    broken["name"] = "broken"
    (folder / "broken.json").write_text(json.dumps(broken))
    entries = {e.name: e for e in list_models([folder])}
    assert "training-config" not in entries
    assert entries["broken"].card is None and "sha256" in entries["broken"].problem
    with pytest.raises(ModelFileError, match="sha256"):
        find_model("broken", [folder])


def test_bundled_models_if_any_pass_their_checks():
    for entry in list_models():
        if entry.source == "bundled":
            assert entry.card is not None, entry.problem
            if entry.card.kind == "base":
                load_network(entry.card_path)
            else:  # a ControlNet loads against its base (test_training_models); here: its sha256
                verify_weights(entry.card, entry.card_path)
    assert BUNDLED_DIR.is_dir()


def test_saved_model_files_get_the_usual_permissions(tiny_model_card):
    # not the private 0600 of a temporary file: models are shared between users of a machine
    umask = os.umask(0)
    os.umask(umask)
    for path in tiny_model_card.parent.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
