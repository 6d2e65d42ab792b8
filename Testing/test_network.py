import math

import pytest
import torch

from MedDiffFMLogic.network import (
    ABSENT_ANATOMY, PAPER, PRESETS, TINY, MedDiffFMNet, NetworkConfig, anatomy_bitplanes, coordinate_grid,
    position_encoding, whole_volume_axes,
)
from MedDiffFMLogic.regions import NUM_REGION_CLASSES


def test_paper_config_matches_the_paper():
    # base 32 channels, one residual block per level, attention only at 16^3 for a 128^3 input
    assert PAPER.channels[0] == 32 and PAPER.num_res_blocks == 1 and PAPER.window_size == 128
    deepest = PAPER.window_size // PAPER.size_divisor
    assert deepest == 16 and PAPER.attention_levels == (False, False, False, True)
    assert PAPER.num_region_classes == NUM_REGION_CLASSES == 4


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_round_trips_through_a_dict(name):
    config = PRESETS[name]
    assert NetworkConfig.from_dict(config.to_dict()) == config


def test_config_rejects_inconsistent_sizes():
    with pytest.raises(ValueError):
        NetworkConfig(channels=(8, 16), attention_levels=(False,), norm_num_groups=8)
    with pytest.raises(ValueError):
        NetworkConfig(channels=(8, 16, 16), attention_levels=(False, False, True), norm_num_groups=8, window_size=30)
    with pytest.raises(ValueError):
        NetworkConfig.from_dict({**TINY.to_dict(), "unknown_field": 1})


def test_position_encoding_is_nerf_style():
    coords = coordinate_grid(whole_volume_axes((4, 5, 6)))
    enc = position_encoding(coords, 2)
    assert enc.shape == (1, 3 + 12, 4, 5, 6)
    assert torch.equal(enc[:, :3], coords)
    assert torch.allclose(enc[:, 3:6], torch.sin(math.pi * coords))
    assert torch.allclose(enc[:, 6:9], torch.cos(math.pi * coords))
    assert torch.allclose(enc[:, 9:12], torch.sin(2 * math.pi * coords))
    # whole-volume coordinates span [-1, 1] along every axis
    assert coords[0, 0, 0, 0, 0] == -1 and coords[0, 0, -1, 0, 0] == 1 and coords[0, 2, 0, 0, -1] == 1


def test_anatomy_bitplanes_encode_every_label_uniquely():
    labels = torch.arange(119).view(1, 119, 1, 1)
    planes = anatomy_bitplanes(labels, 7)
    assert set(planes.unique().tolist()) == {-1.0, 1.0}
    decoded = (((planes + 1) / 2).long() * (2 ** torch.arange(7)).view(1, 7, 1, 1, 1)).sum(1)
    assert torch.equal(decoded, labels)
    absent = anatomy_bitplanes(torch.full((1, 2, 2, 2), ABSENT_ANATOMY), 7)
    assert not absent.any()
    with pytest.raises(ValueError):
        anatomy_bitplanes(torch.full((1, 1, 1, 1), 128), 7)


def test_forward_shape_and_conditions_change_the_output(tiny_net):
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32, 32)
    t = torch.tensor([10, 700])
    coords = coordinate_grid(whole_volume_axes((32, 32, 32)))
    anatomy = torch.randint(0, 119, (2, 32, 32, 32))
    with torch.no_grad():
        base = tiny_net(x, t, region=1, anatomy=anatomy, coords=coords)
        assert base.shape == x.shape
        assert not torch.allclose(base, tiny_net(x, t, region=2, anatomy=anatomy, coords=coords))
        assert not torch.allclose(base, tiny_net(x, t, region=1, anatomy=None, coords=coords))
        assert not torch.allclose(base, tiny_net(x, t, region=1, anatomy=anatomy, coords=None))
        # all conditions absent is a valid call (the model runs without them)
        assert torch.isfinite(tiny_net(x, t)).all()


def test_fresh_network_predicts_zero_noise():
    # MONAI zero-initialises the output convolution: an untrained model is a no-op denoiser
    net = MedDiffFMNet(TINY)
    with torch.no_grad():
        out = net(torch.randn(1, 1, 32, 32, 32), torch.tensor([5]))
    assert not out.any()


def test_fused_attention_is_the_same_model(tiny_net):
    # SDPA is a way of running the model: the same weights give the same output, and gradients flow
    plain = MedDiffFMNet(TINY, fused_attention=False).eval()
    plain.load_state_dict(tiny_net.state_dict())
    torch.manual_seed(1)
    x = torch.randn(2, 1, 32, 32, 32, requires_grad=True)
    t = torch.tensor([3, 900])
    coords = coordinate_grid(whole_volume_axes((32, 32, 32)))
    fused_out = tiny_net(x, t, region=2, coords=coords)
    torch.testing.assert_close(fused_out, plain(x, t, region=2, coords=coords), rtol=1e-4, atol=2e-5)
    fused_out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
