import torch

from iic.clustering.config import CLUSTER_PRESETS, ClusterConfig
from iic.clustering.network import IICNet
from iic.clustering.views import ClusterViews, EvalView
from iic.config import config_from_dict
from iic.inputs import NetworkInput
from iic.losses import iic_loss


def uint8_images(n, c, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


def test_views_shapes_and_repeats():
    config = config_from_dict(ClusterConfig, CLUSTER_PRESETS["cifar10"])
    x, gx = ClusterViews(config, 3)(uint8_images(5, 3, 32))
    assert x.shape == (5, 3, 32, 32)  # one x per image, shared by its r pairs
    assert gx.shape == (5 * config.repeats, 3, 32, 32)
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_x_per_pair_gives_each_pair_its_own_x():
    config = ClusterConfig(repeats=3, x_per_pair=True)
    images = uint8_images(4, 1, 16)
    x, gx = ClusterViews(config, 1)(images, seed=0)
    assert x.shape == gx.shape == (12, 1, config.input_size, config.input_size)
    assert not torch.equal(x[:4], x[4:8])  # copy 0 and copy 1 of the same images, cropped independently
    p, p_tf = IICNet(config, 1).forward_pair(x, gx)
    assert p.shape == p_tf.shape == (config.num_subheads, 12, config.k_b)


def test_each_repeat_gets_its_own_transformation():
    config = ClusterConfig(repeats=3)
    images = uint8_images(1, 1, 16).expand(4, -1, -1, -1).contiguous()
    _, gx = ClusterViews(config, 1)(images, seed=0)
    copies = gx.view(3, 4, 1, 16, 16)
    assert not torch.allclose(copies[0], copies[1])
    assert not torch.allclose(gx[0], gx[1])


def test_views_reproducible_under_a_seed():
    views = ClusterViews(config_from_dict(ClusterConfig, CLUSTER_PRESETS["mnist"]), 1)
    images = uint8_images(6, 1, 28)
    a, b, c = views(images, seed=3), views(images, seed=3), views(images, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_seeded_views_leave_the_callers_random_stream_as_it_was():
    views = ClusterViews(config_from_dict(ClusterConfig, CLUSTER_PRESETS["mnist"]), 1)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    views(uint8_images(6, 1, 28), seed=7)
    assert torch.equal(torch.rand(3), expected)


def centred_share(x_crop: str) -> float:
    """Share of x views that are exactly the centre crop (the evaluation view)."""
    config = ClusterConfig(image_size=16, input_size=12, crop_size=12, eval_crop_size=12, repeats=1, x_crop=x_crop)
    views = ClusterViews(config, 1)
    images = uint8_images(400, 1, 16)
    x, _ = views(images, seed=0)
    return (x == views.eval_view(images)).flatten(1).all(1).float().mean().item()


def test_x_crop_modes_centre_random_and_the_authors_half_and_half():
    assert centred_share("centre") == 1.0
    assert centred_share("random") < 0.1  # 1 in 25 positions of a 12-px crop in 16 px is the centre
    assert 0.4 < centred_share("centre_half") < 0.65  # half centred, plus the random crops that land there


def test_rotation_probability():
    def rotated_share(p: float) -> float:
        config = ClusterConfig(image_size=16, input_size=16, tf_crop_sizes=(16, 16), rotation=30.0, rotation_p=p,
                               jitter=(0.0, 0.0, 0.0, 0.0), repeats=1)
        images = uint8_images(400, 1, 16)
        _, gx = ClusterViews(config, 1)(images, seed=0)
        return (~torch.isclose(gx, images.float() / 255, atol=1e-4)).flatten(1).any(1).float().mean().item()

    assert rotated_share(0.0) == 0.0
    assert 0.4 < rotated_share(0.5) < 0.6
    assert rotated_share(1.0) > 0.95


def test_eval_view_is_deterministic_centre_crop():
    config = ClusterConfig(image_size=16, input_size=16, eval_crop_size=16)
    images = uint8_images(3, 1, 16)
    out = EvalView(config)(images)
    torch.testing.assert_close(out, images.float() / 255)


def test_sobel_channels_and_response():
    sobel = NetworkInput(3, sobel=True, include_rgb=False)
    with_rgb = NetworkInput(3, sobel=True, include_rgb=True)
    flat = torch.full((2, 3, 16, 16), 0.5)
    assert sobel(flat).shape == (2, 2, 16, 16) and sobel.out_channels == 2
    assert with_rgb(flat).shape == (2, 5, 16, 16) and with_rgb.out_channels == 5
    assert sobel(flat)[..., 2:-2, 2:-2].abs().max() == 0
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(1, 3, 16, 16)
    gx, gy = sobel(ramp)[0, :, 8, 8]
    assert gx > 0 and gy.abs() < 1e-6
    both = with_rgb(ramp)  # colour first, then the gradients
    torch.testing.assert_close(both[:, :3], ramp)
    torch.testing.assert_close(both[:, 3:], sobel(ramp))


def test_network_outputs_probabilities_per_subhead():
    config = config_from_dict(ClusterConfig, {**CLUSTER_PRESETS["cifar10"], "backbone": "clusternet6c"})
    net = IICNet(config, 3)
    p = net(torch.rand(4, 3, 32, 32), "A")
    assert p.shape == (config.num_subheads, 4, config.k_a)
    torch.testing.assert_close(p.sum(-1), torch.ones(config.num_subheads, 4))


def test_independent_trunks_stack_their_subheads():
    config = ClusterConfig(trunks=2, num_subheads=3)
    net = IICNet(config, 1)
    p = net(torch.rand(4, 1, config.input_size, config.input_size), "B")
    assert p.shape == (6, 4, config.k_b)
    p[:3, :, 0].sum().backward()  # sub-heads 0-2 belong to the first trunk only
    assert all(param.grad is None or not param.grad.any() for param in net.towers[1].parameters())
    assert all(param.grad is not None and param.grad.abs().sum() > 0 for param in net.towers[0].trunk.parameters())


def test_one_pass_of_x_equals_passing_its_r_copies():
    """forward_pair's shortcut: the same outputs, loss and gradients as the official r copies of x (train-mode BN)."""
    config = ClusterConfig(repeats=3, num_subheads=2, widths=(8, 8, 16, 16))
    torch.manual_seed(0)
    shortcut, copies = IICNet(config, 1), IICNet(config, 1)
    copies.load_state_dict(shortcut.state_dict())
    x, gx = ClusterViews(config, 1)(uint8_images(6, 1, config.image_size), seed=0)

    def loss_and_grads(net, p, p_tf):
        loss = torch.stack([iic_loss(p[s], p_tf[s])[0] for s in range(len(p))]).mean()
        loss.backward()
        return loss, p, [param.grad for param in net.parameters()]

    loss, p, grads = loss_and_grads(shortcut, *shortcut.forward_pair(x, gx))
    loss_r, p_r, grads_r = loss_and_grads(copies, copies(x.repeat(3, 1, 1, 1)), copies(gx))
    assert p.shape == p_r.shape == (2, 18, config.k_b)
    torch.testing.assert_close(p, p_r)
    torch.testing.assert_close(loss, loss_r)
    for g, g_r in zip(grads, grads_r):
        torch.testing.assert_close(g, g_r, rtol=1e-4, atol=1e-6)
