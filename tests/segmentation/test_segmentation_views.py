import torch

from iic.inputs import NetworkInput
from iic.segmentation.network import SegmentationNet
from iic.segmentation.views import InvertibleViews, ViewParams


def smooth_batch(n=4, channels=4, h=24, w=32):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([yy, xx, yy * xx, 1 - xx][:channels])
    return base[None].repeat(n, 1, 1, 1)


def test_flip_then_inverse_returns_the_map_exactly():
    maps = torch.rand(6, 5, 9, 13).softmax(1)
    views = InvertibleViews(jitter=(0, 0, 0, 0), flip=True)
    params = ViewParams(flipped=torch.tensor([True, False, True, True, False, True]), affine=None)
    flipped = torch.where(params.flipped[:, None, None, None], maps.flip(-1), maps)
    back, valid = views.invert(flipped, params)
    assert torch.equal(back, maps)
    assert valid.all()


def test_random_views_flip_and_invert_exactly():
    torch.manual_seed(0)
    x = torch.rand(8, 4, 10, 12)
    views = InvertibleViews(jitter=(0.4, 0.4, 0.4, 0.1), flip=True, color_channels=3)
    x_tf, params = views(x)
    assert params.flipped.any() and not params.flipped.all()
    back, valid = views.invert(x_tf[:, 3:], params)  # the IR channel is never jittered
    assert torch.equal(back, x[:, 3:]) and valid.all()
    assert not torch.allclose(x_tf[:, :3],
                              torch.where(params.flipped[:, None, None, None], x[:, :3].flip(-1), x[:, :3]))


def test_greyscale_views_are_jittered_in_brightness_and_contrast():
    torch.manual_seed(3)
    x = smooth_batch(channels=2)  # one grey channel and one extra (infrared-like) channel
    x_tf, _ = InvertibleViews(jitter=(0.4, 0.4, 0.4, 0.1), flip=False, color_channels=1)(x)
    assert (x_tf[:, 0] - x[:, 0]).abs().mean() > 0.01
    assert torch.equal(x_tf[:, 1], x[:, 1])


def test_affine_inverse_warps_back_and_masks_pixels_from_outside():
    torch.manual_seed(1)
    x = smooth_batch()
    views = InvertibleViews(jitter=(0, 0, 0, 0), flip=True, rotation=30, affine_scale=(0.8, 1.2), affine_shear=10,
                            color_channels=3)
    x_tf, params = views(x)
    back, valid = views.invert(x_tf, params)
    assert params.affine is not None and valid.shape == (4, 24, 32)
    assert 0.3 < valid.float().mean() < 1.0  # rotations move some pixels out of the frame
    error = (back - x).abs().amax(dim=1)
    assert error[valid].max() < 0.02  # bilinear round trip of a smooth image
    assert error[~valid].max() > 0.05  # what the mask removes really is wrong


def test_the_valid_mask_does_not_depend_on_the_maps_dtype():
    torch.manual_seed(2)
    views = InvertibleViews(jitter=(0, 0, 0, 0), flip=True, rotation=20, color_channels=3)
    _, params = views(smooth_batch())
    maps = torch.rand(4, 5, 24, 32).softmax(1)
    _, valid = views.invert(maps, params)
    for dtype in (torch.bfloat16, torch.float16):  # bf16-mixed on a CPU hands bfloat16 maps to invert
        back, valid_low = views.invert(maps.to(dtype), params)
        assert back.dtype == dtype and torch.equal(valid_low, valid)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as in training: autocast around the whole step
        _, valid_autocast = views.invert(maps.bfloat16(), params)
    assert torch.equal(valid_autocast, valid)
    assert 0.3 < valid.float().mean() < 1.0


def test_input_channels_rgb_sobel_and_extra():
    x = torch.rand(2, 4, 16, 16)
    for use_sobel, include_rgb, expected in ((False, True, 4), (True, True, 6), (True, False, 3)):
        network_input = NetworkInput(3, extra_channels=1, sobel=use_sobel, include_rgb=include_rgb)
        out = network_input(x)
        assert out.shape[1] == expected == network_input.out_channels
        assert torch.equal(out[:, -1], x[:, 3])  # the extra (IR) channel passes through last
        if include_rgb:
            assert torch.equal(out[:, :3], x[:, :3])  # colour first


def test_network_maps_are_distributions_at_input_size_without_a_constant_border():
    torch.manual_seed(0)
    net = SegmentationNet(in_channels=3, k_a=7, k_b=3, num_subheads=2, widths=(8, 8, 8, 8, 8, 8)).eval()
    x = torch.rand(2, 3, 22, 30)
    maps_a, maps_b = net(x, "A"), net(x, "B")
    assert len(maps_b) == 2 and maps_b[0].shape == (2, 3, 22, 30) and maps_a[0].shape == (2, 7, 22, 30)
    torch.testing.assert_close(maps_b[0].sum(1), torch.ones(2, 22, 30))
    # The official head's padded 1×1 conv gave the same logits all round the border: here the border varies.
    border = torch.cat([maps_b[0][0, :, 0, :], maps_b[0][0, :, -1, :]], dim=1)
    assert border.std(dim=1).min() > 1e-4
