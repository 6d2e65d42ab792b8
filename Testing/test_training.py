import torch

from MedDiffFMLogic.network import ABSENT_ANATOMY, TINY, UNKNOWN_REGION_INDEX, MedDiffFMNet, coordinate_grid, whole_volume_axes
from MedDiffFMLogic.schedules import make_ddpm
from MedDiffFMLogic.training.objective import Batch, diffusion_loss, drop_conditions


def _batch():
    g = torch.Generator().manual_seed(0)
    z = torch.linspace(-1, 1, 32)
    image = (0.6 * torch.tanh(4 * z)[:, None, None] * torch.ones(32, 32, 32))[None, None].repeat(2, 1, 1, 1, 1)
    image += 0.05 * torch.randn(image.shape, generator=g)
    return Batch(image.clamp(-1, 1), torch.tensor([1, 2]), torch.randint(0, 119, (2, 32, 32, 32), generator=g),
                 coordinate_grid(whole_volume_axes((32, 32, 32))).repeat(2, 1, 1, 1, 1))


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    net = MedDiffFMNet(TINY)
    scheduler = make_ddpm()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    batch = _batch()

    def loss():
        # the same noise and timesteps every time: only the weights change the loss
        return diffusion_loss(net, scheduler, batch, torch.Generator().manual_seed(1))

    with torch.no_grad():
        before = loss().item()
    for _ in range(12):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    with torch.no_grad():
        after = loss().item()
    assert after < 0.9 * before, (before, after)
    # an untrained network predicts zero noise: the L1 loss starts at E|eps| = sqrt(2/pi)
    assert abs(before - (2 / torch.pi) ** 0.5) < 0.02


def test_condition_dropout_replaces_conditions_by_absent():
    batch = _batch()
    g = torch.Generator().manual_seed(0)
    assert drop_conditions(batch, 0.0, g) is batch
    dropped = drop_conditions(batch, 1.0, g)
    assert (dropped.region == UNKNOWN_REGION_INDEX).all()
    assert (dropped.anatomy == ABSENT_ANATOMY).all()
    # a dropped position reaches the network exactly as an absent one: zero channels
    net = MedDiffFMNet(TINY)
    shape = batch.image.shape
    dropped_channels = net.condition_channels(shape, dropped.coords, None, torch.device("cpu"), torch.float32)
    absent_channels = net.condition_channels(shape, None, None, torch.device("cpu"), torch.float32)
    assert torch.equal(dropped_channels, absent_channels)
    kept_channels = net.condition_channels(shape, batch.coords, None, torch.device("cpu"), torch.float32)
    assert kept_channels[:, : TINY.position_channels].abs().sum() > 0
    assert torch.equal(dropped.image, batch.image)
    # with p = 0.5 over many samples, about half are dropped, independently per sample
    many = Batch(torch.zeros(400, 1, 1, 1, 1), torch.zeros(400, dtype=torch.long))
    rate = (drop_conditions(many, 0.5, g).region == UNKNOWN_REGION_INDEX).float().mean()
    assert 0.4 < rate < 0.6
