"""Dense IIC on a frozen pretrained trunk: the trunk's feature maps (DenseBackbone), heads on its grid, the cached
training pairs of a mirror, the inverse of g on a coarser grid, the settings a trunk refuses, and one tiny run."""

import copy
import dataclasses

import kornia
import numpy as np
import pytest
import torch
from torch import nn

from iic.config import config_to_dict
from iic.errors import IICError
from iic.segmentation.backbones import DenseBackbone, pretrained_dense_backbone
from iic.segmentation.config import SEGMENT_PRESETS, SegmentConfig, validate_config
from iic.segmentation.data import IGNORE, ArraySource, demo_source
from iic.segmentation.features import (
    CachedFeatureCrops,
    cacheable_views,
    cached_training_features,
    downsample_mask,
)
from iic.segmentation.module import SegmentationModule
from iic.segmentation.network import DenseHead, SegmentationNet
from iic.segmentation.views import InvertibleViews, ViewParams

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NO_JITTER = (0.0, 0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def resnet():
    """resnet18 with random weights (no download) at strides 8 and 16; tests copy it before changing it."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return DenseBackbone("resnet18", (8, 16))


@pytest.fixture(scope="module")
def resnet8(resnet):
    """The same network at stride 8 only."""
    return DenseBackbone("resnet18", (8,), frozen=resnet.frozen)


def batch_norms(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def backbone_config(**settings) -> SegmentConfig:
    base = dict(backbone="resnet18", weights="none", feature_strides=(8,), crop_size=32, T=1, k_a=0,
                jitter=NO_JITTER)
    return SegmentConfig(**{**base, **settings})


# --- DenseBackbone ----------------------------------------------------------------------------------------------------

def test_resnet_stages_are_the_last_blocks_at_strides_8_and_16(resnet):
    assert resnet.strides == (8, 16) and resnet.stride == 8
    assert resnet.stage_names == ["layer2.1", "layer3.1"]
    assert resnet.out_channels == 128 + 256


def test_features_are_on_the_finest_grid_with_each_stage_unit_norm_per_pixel(resnet):
    torch.manual_seed(1)
    images = torch.rand(2, 3, 50, 70)  # neither side a multiple of 8 or 16
    features = resnet(images)
    assert features.dtype == torch.float32 and features.shape == (2, 384, 7, 9)  # ⌈50/8⌉ × ⌈70/8⌉
    for part in (features[:, :128], features[:, 128:]):
        torch.testing.assert_close(part.norm(dim=1), torch.ones(2, 7, 9))
    # The stride-8 stage is the network's layer2 output, normalised: nothing of it is lost or reordered.
    network = resnet.frozen.network
    x = (images - resnet.frozen.mean) / resnet.frozen.std
    with torch.no_grad():
        layer2 = network.layer2(network.layer1(network.maxpool(network.relu(network.bn1(network.conv1(x))))))
    torch.testing.assert_close(features[:, :128], torch.nn.functional.normalize(layer2, dim=1), atol=1e-5, rtol=1e-4)


def test_a_stage_is_the_same_whichever_other_stages_are_asked_for(resnet, resnet8):
    images = torch.rand(1, 3, 40, 56)
    torch.testing.assert_close(resnet(images)[:, :128], resnet8(images))
    assert resnet8.out_channels == 128 and resnet8(images).shape == (1, 128, 5, 7)


def test_grey_images_are_taken_as_colour(resnet8):
    grey = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(resnet8(grey), resnet8(grey.expand(-1, 3, -1, -1)))
    with pytest.raises(IICError, match="4 channels"):
        resnet8(torch.rand(1, 4, 32, 32))


@pytest.mark.parametrize("strides", [(12,), (8, 12), ()])
def test_a_stride_the_network_lacks_is_one_clear_error_listing_those_it_has(resnet, strides):
    with pytest.raises(IICError, match="strides 2, 4, 8, 16, 32"):
        DenseBackbone("resnet18", strides, frozen=resnet.frozen)


def test_the_trunk_is_frozen_and_stays_in_eval_mode(resnet8):
    trunk = copy.deepcopy(resnet8)
    assert not any(p.requires_grad for p in trunk.parameters())
    norms = batch_norms(trunk)
    before = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in norms]
    assert trunk.train() is trunk
    assert not trunk.training and not any(m.training for m in trunk.modules())
    trunk(torch.rand(2, 3, 32, 32) * 3)  # far from the statistics: train-mode BatchNorm would move them
    for bn, (mean, var) in zip(norms, before):
        assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)


def test_pretrained_efficientnet_lite0_gives_its_own_weights_offline():
    pretrained = pretrained_dense_backbone("efficientnet_lite0", strides=(8, 16))
    assert pretrained.out_channels == 40 + 112 and pretrained.strides == (8, 16)
    random = DenseBackbone("efficientnet_lite0", (8, 16))
    names = [n for n, _ in pretrained.named_parameters()]
    assert names == [n for n, _ in random.named_parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(pretrained.parameters(), random.parameters()))
    features = pretrained(torch.rand(1, 3, 48, 64))
    assert features.shape == (1, 152, 6, 8)
    torch.testing.assert_close(features[:, :40].norm(dim=1), torch.ones(1, 6, 8))


# --- SegmentationNet on a given trunk ---------------------------------------------------------------------------------

def test_a_given_trunk_keeps_its_weights_and_the_heads_work_on_its_grid(resnet8):
    trunk = copy.deepcopy(resnet8)
    torch.manual_seed(2)
    with torch.no_grad():  # nothing like a fresh initialisation: re-initialising any of it shows
        for tensor in list(trunk.parameters()) + [b for n, b in trunk.named_buffers() if "running" in n]:
            tensor.copy_(torch.rand_like(tensor) + 0.5)
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    net = SegmentationNet(3, k_a=5, k_b=3, num_subheads=2, trunk=trunk)
    assert net.trunk is trunk
    after = net.trunk.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert set(net.heads) == {"A", "B"} and isinstance(net.heads["B"], DenseHead)
    assert isinstance(net.heads["B"].subheads[0], nn.Conv2d)  # no hidden layer: the paper's linear head

    images = torch.rand(2, 3, 40, 56)
    features = trunk(images)
    for head, k in (("A", 5), ("B", 3)):
        maps = net.head_maps(features, head)
        assert len(maps) == 2
        for m in maps:
            assert m.shape == (2, k, 5, 7)  # the trunk's grid
            torch.testing.assert_close(m.sum(dim=1), torch.ones(2, 5, 7))
            assert (m >= 0).all()
    full = net(images)  # forward: upsampled to the input's size
    assert [tuple(m.shape) for m in full] == [(2, 3, 40, 56)] * 2


def test_hidden_head_widths_give_conv_batchnorm_relu_layers(resnet8):
    net = SegmentationNet(3, k_a=0, k_b=4, trunk=resnet8, head_widths=(16,))
    assert set(net.heads) == {"B"}
    subhead = net.heads["B"].subheads[0]
    assert isinstance(subhead, nn.Sequential)
    assert [type(m) for m in subhead] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d]
    assert subhead[0].in_channels == 128 and subhead[0].out_channels == 16 and subhead[3].out_channels == 4
    maps = net.head_maps(torch.randn(2, 128, 3, 5))
    assert maps[0].shape == (2, 4, 3, 5)


def test_net_train_mode_leaves_the_trunk_in_eval_mode(resnet8):
    net = SegmentationNet(3, k_a=0, k_b=3, trunk=copy.deepcopy(resnet8), head_widths=(8,))
    net.train()
    assert net.heads["B"].training and not net.trunk.training
    assert not any(m.training for m in net.trunk.modules())
    assert all(bn.training for bn in batch_norms(net.heads))
    before = [bn.running_mean.clone() for bn in batch_norms(net.trunk)]
    net(torch.rand(2, 3, 32, 32) * 3)
    assert all(torch.equal(bn.running_mean, b) for bn, b in zip(batch_norms(net.trunk), before))


# --- cached training features --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def symmetric_source() -> ArraySource:
    """Three random 64×64 images, the third the mirror of the second; the top half of the first is unlabelled."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    images[2] = images[1][:, ::-1]
    labels = np.zeros((3, 64, 64), dtype=np.int64)
    labels[0, :28] = IGNORE  # 3.5 of 8 cells: a cell half masked counts as masked
    return ArraySource(images, labels, ["one"])


def test_cached_features_are_those_of_x_and_of_its_mirror_mirrored_back(resnet8, symmetric_source):
    crops = CachedFeatureCrops(resnet8, symmetric_source, crop_size=32, mask_unlabelled=True, progress=False)
    assert len(crops) == 3 and crops.crop == 4
    for index in range(3):
        image = torch.from_numpy(symmetric_source.images[index]).permute(2, 0, 1)[None].float() / 255
        assert crops.features[index].dtype == torch.float16 and crops.features[index].shape == (128, 8, 8)
        torch.testing.assert_close(crops.features[index].float(), resnet8(image)[0], atol=2e-3, rtol=1e-2)
        torch.testing.assert_close(crops.mirrored[index].float(), resnet8(image.flip(-1))[0].flip(-1),
                                   atol=2e-3, rtol=1e-2)
    # Image 2 is the mirror of image 1: each one's mirrored view is the other's features mirrored.
    assert torch.equal(crops.mirrored[1], crops.features[2].flip(-1))
    assert torch.equal(crops.mirrored[2], crops.features[1].flip(-1))
    assert not torch.equal(crops.features[1], crops.mirrored[1])  # a mirror really is another view
    expected = torch.ones(8, 8, dtype=torch.bool)
    expected[:4] = False  # rows 0–3 hold 8, 8, 8 and 4 of 8 unlabelled pixel rows
    assert torch.equal(crops.masks[0], expected) and crops.masks[1].all()


def test_without_masking_every_cell_counts(resnet8, symmetric_source):
    crops = CachedFeatureCrops(resnet8, symmetric_source, crop_size=32, progress=False)
    assert all(mask.all() for mask in crops.masks)


def test_a_cached_crop_is_one_window_of_both_views_in_either_order(resnet8, symmetric_source):
    crops = CachedFeatureCrops(resnet8, symmetric_source, crop_size=32, mask_unlabelled=True, progress=False)
    torch.manual_seed(3)
    features, mirrored, mask = crops.features[0], crops.mirrored[0], crops.masks[0]
    orders, corners = set(), set()
    for _ in range(40):
        x, x_tf, crop_mask = crops[0]
        assert x.shape == x_tf.shape == (128, 4, 4) and crop_mask.shape == (4, 4) and crop_mask.dtype == torch.bool
        found = [(top, left, order) for top in range(5) for left in range(5)
                 for order, (a, b) in enumerate(((features, mirrored), (mirrored, features)))
                 if torch.equal(x, a[:, top:top + 4, left:left + 4])
                 and torch.equal(x_tf, b[:, top:top + 4, left:left + 4])]
        assert len(found) == 1, found
        top, left, order = found[0]
        assert torch.equal(crop_mask, mask[top:top + 4, left:left + 4])
        orders.add(order)
        corners.add((top, left))
    assert orders == {0, 1}  # either view is x
    assert len(corners) > 5


def test_without_the_mirror_both_views_are_the_features(resnet8, symmetric_source):
    crops = CachedFeatureCrops(resnet8, symmetric_source, crop_size=32, mirror=False, progress=False)
    assert crops.mirrored == []
    x, x_tf, _ = crops[1]
    assert torch.equal(x, x_tf)


def test_images_smaller_than_the_crop_are_padded_and_masked(resnet8):
    rng = np.random.default_rng(4)
    source = ArraySource(rng.integers(0, 256, (2, 16, 24, 3), dtype=np.uint8), None, ["one"])
    crops = CachedFeatureCrops(resnet8, source, crop_size=32, mask_unlabelled=True, progress=False)
    x, x_tf, mask = crops[0]
    assert x.shape == (128, 4, 4) and mask.shape == (4, 4)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:2, :3] = True  # the 2 × 3 grid of a 16 × 24 image
    assert torch.equal(mask, expected)
    assert not x[:, 2:].any() and not x_tf[:, :, 3:].any()


def test_downsample_mask_keeps_cells_most_of_whose_pixels_count():
    mask = torch.zeros(2, 4, 6, dtype=torch.bool)  # two masks of 2 × 3 cells of 2 × 2 pixels
    mask[0, 0:2, 0:2] = True  # 4 of 4
    mask[0, 0:2, 2] = True  # 2 of 4: not most
    mask[0, 2:4, 4:6] = torch.tensor([[True, True], [True, False]])  # 3 of 4
    mask[1, 2, 0] = True  # 1 of 4
    cells = downsample_mask(mask, (2, 3))
    assert cells.dtype == torch.bool and cells.shape == (2, 2, 3)
    assert cells[0].tolist() == [[True, False, False], [False, False, True]]
    assert not cells[1].any()
    assert downsample_mask(mask, (4, 6)) is mask  # on its own grid already


@pytest.mark.parametrize("settings, cacheable", [
    (dict(), True),
    (dict(flip=False), True),
    (dict(jitter=(0.0, 0.0, 0.0, 0.1)), False),
    (dict(jitter=(0.4, 0.0, 0.0, 0.0)), False),
    (dict(rotation=5.0), False),
    (dict(affine_shear=3.0), False),
    (dict(affine_scale=(0.9, 1.1)), False),
    (dict(affine_scale=(1.0, 1.2)), False),
])
def test_cacheable_views_are_at_most_a_mirror(settings, cacheable):
    assert cacheable_views(backbone_config(**settings)) is cacheable


def test_the_features_preset_caches_its_features():
    config = dataclasses.replace(SegmentConfig(), **SEGMENT_PRESETS["camvid3-features"])
    assert cacheable_views(config)


def test_cached_training_features_only_for_views_that_allow_it(resnet8, symmetric_source):
    cached = cached_training_features(resnet8, symmetric_source, backbone_config(), progress=False)
    assert isinstance(cached, CachedFeatureCrops) and cached.crop == 4 and len(cached.mirrored) == 3
    unmirrored = cached_training_features(resnet8, symmetric_source, backbone_config(flip=False), progress=False)
    assert unmirrored.mirrored == []
    assert cached_training_features(resnet8, symmetric_source, backbone_config(jitter=(0.1, 0, 0, 0))) is None


def test_crop_scales_are_never_silently_dropped_by_the_cache(resnet8, symmetric_source):
    config = backbone_config(crop_scales=(0.5, 1.0))
    try:
        validate_config(config)
    except IICError:
        return  # refused: fine
    # Accepted: the training crops must then be zoomed as asked, which cached feature crops cannot do.
    assert cached_training_features(resnet8, symmetric_source, config, progress=False) is None


# --- g⁻¹ on a coarser grid ----------------------------------------------------------------------------------------

def test_a_shift_of_8_pixels_is_undone_as_2_cells_on_a_4x_coarser_grid():
    torch.manual_seed(5)
    base = torch.rand(2, 3, 8, 12)  # maps of x on the grid of 32 × 48 images
    of_view = torch.zeros_like(base)  # g moves the image 8 pixels right: its maps move 2 cells
    of_view[..., 2:] = base[..., :-2]
    matrix = torch.eye(3).repeat(2, 1, 1)
    matrix[:, 0, 2] = 8.0
    views = InvertibleViews(jitter=NO_JITTER, flip=False)
    back, valid = views.invert(of_view, ViewParams(torch.tensor([False, False]), matrix), frame=(32, 48))
    assert valid.shape == (2, 8, 12)
    assert valid[..., :10].all() and not valid[..., 10:].any()  # the last 2 columns came from outside g(x)
    torch.testing.assert_close(back[..., :10], base[..., :10])
    # Without the frame the same matrix would count pixels of the grid: 8 cells, a different answer.
    _, valid_as_cells = views.invert(of_view, ViewParams(torch.tensor([False, False]), matrix))
    assert valid_as_cells[..., :4].all() and not valid_as_cells[..., 4:].any()


def test_a_flip_after_the_shift_is_undone_too():
    torch.manual_seed(6)
    base = torch.rand(1, 3, 8, 12)
    matrix = torch.eye(3)[None].clone()
    matrix[0, 0, 2] = 8.0
    # InvertibleViews mirrors before its affine: g(x) is x mirrored, then moved 8 pixels right.
    mirrored_shifted = torch.zeros_like(base)
    mirrored_shifted[..., 2:] = base.flip(-1)[..., :-2]
    back, valid = InvertibleViews(jitter=NO_JITTER, flip=True).invert(
        mirrored_shifted, ViewParams(torch.tensor([True]), matrix), frame=(32, 48))
    assert valid[..., 2:].all() and not valid[..., :2].any()  # mirrored: the cells lost are on the left
    torch.testing.assert_close(back[..., 2:], base[..., 2:])


@pytest.mark.parametrize("degrees, scale", [(0.0, 2.0), (30.0, 1.5), (0.0, 0.8)])
def test_a_random_affine_is_undone_on_a_coarse_grid_whose_cell_j_sits_over_pixel_4j(degrees, scale):
    """ResNet's and EfficientNet's strided maps put cell j over pixel s·j: sampling a smooth image there is a
    stand-in for a trunk's maps. g warps the 64 × 64 image; g⁻¹ on the 16 × 16 grid must give x's samples back."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    image = torch.stack([xx, yy, xx + 2 * yy])[None]  # pixel coordinates: errors read in pixels
    affine = kornia.augmentation.RandomAffine(degrees=(degrees, degrees), scale=(scale, scale), p=1.0,
                                              align_corners=False)
    warped = affine(image)
    views = InvertibleViews(jitter=NO_JITTER, flip=False)
    back, valid = views.invert(warped[..., ::4, ::4], ViewParams(torch.tensor([False]), affine.transform_matrix),
                               frame=(64, 64))
    assert valid.shape == (1, 16, 16) and 0.2 < valid.float().mean() < 1.0
    error = (back - image[..., ::4, ::4]).abs().amax(dim=1)[valid]
    assert error.max() < 0.5  # pixels: an eighth of a cell


# --- settings -----------------------------------------------------------------------------------------------------

def test_backbone_settings_that_fit_are_accepted():
    validate_config(backbone_config())
    validate_config(backbone_config(feature_strides=(8, 16), crop_size=64, T=7, head_widths=(32, 16)))
    validate_config(backbone_config(feature_strides=(16, 8), crop_size=32, T=3))  # 4 cells of the finest stride
    validate_config(SegmentConfig(T=20, crop_size=32))  # no backbone: T counts pixels, strides are not looked at


@pytest.mark.parametrize("settings, message", [
    (dict(sobel=True), "--sobel"),
    (dict(sobel=True, include_rgb=False), "--sobel"),
    (dict(T=4), r"T=4 .*4 cells"),  # 32 // 8 = 4 cells a side
    (dict(T=4, crop_size=32, feature_strides=(16, 8)), r"T=4 .*stride-8 grid \(4 cells"),  # the finest stride
    (dict(T=1, crop_size=16, feature_strides=(16,)), "T=1"),
    (dict(T=0, crop_size=4), "T=0"),  # a crop smaller than one cell
    (dict(feature_strides=()), "feature_strides"),
    (dict(feature_strides=(0,)), "feature_strides"),
    (dict(feature_strides=(8, -16)), "feature_strides"),
    (dict(feature_strides=(8.0,)), "feature_strides"),
    (dict(feature_strides=(True,)), "feature_strides"),
    (dict(head_widths=(16, 0)), "head_widths"),
    (dict(head_widths=(-4,)), "head_widths"),
])
def test_settings_a_backbone_cannot_take_are_one_clear_error(settings, message):
    with pytest.raises(IICError, match=message) as error:
        validate_config(backbone_config(**settings))
    assert "\n" not in str(error.value)


def test_head_widths_are_checked_without_a_backbone_too():
    with pytest.raises(IICError, match="head_widths"):
        validate_config(SegmentConfig(head_widths=(0,)))


# --- the module -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def module() -> SegmentationModule:
    torch.manual_seed(7)
    config = backbone_config(backbone="mobilenet_v3_small", k_a=4, head_widths=(8,), num_subheads=2)
    return SegmentationModule(config_to_dict(config), ["a", "b", "c"])


def test_the_optimisers_hold_the_heads_and_no_trunk_parameter(module):
    trunk = {id(p) for p in module.net.trunk.parameters()}
    optimisers = module.configure_optimizers()
    assert len(optimisers) == 2  # one per head
    held = [{id(p) for group in o.param_groups for p in group["params"]} for o in optimisers]
    assert not any(ids & trunk for ids in held)
    heads = [{id(p) for p in module.net.heads[head].parameters()} for head in module.head_names]
    assert sorted(map(sorted, held)) == sorted(map(sorted, heads))


def test_losses_from_cached_features_and_from_images_reach_the_heads_only(module):
    module.train()
    assert not module.net.trunk.training
    torch.manual_seed(8)
    images = torch.rand(2, 3, 32, 32)
    mask = torch.ones(2, 32, 32, dtype=torch.bool)
    features = module.net.trunk(images)
    cells = torch.ones(2, *features.shape[-2:], dtype=torch.bool)
    for batch in ((features.half(), features.flip(-1).half(), cells), (images, mask)):
        for head in ("A", "B"):
            module.zero_grad(set_to_none=True)
            losses, plains = module.subhead_losses(batch, head)
            assert losses.shape == plains.shape == (2,) and torch.isfinite(losses).all()
            losses.sum().backward()
            assert all(p.grad is not None for p in module.net.heads[head].parameters())
            assert all(p.grad is None for p in module.net.trunk.parameters())
    module.zero_grad(set_to_none=True)


def test_a_run_builds_its_module_on_the_pretrained_weights():
    from iic.segmentation.module import SegmentationRun

    config = backbone_config(backbone="efficientnet_lite0", weights="DEFAULT", feature_strides=(8, 16))
    source = demo_source(num_images=2, size=32)
    module = SegmentationRun(config, source, source, progress=False).build_module()
    pretrained = pretrained_dense_backbone("efficientnet_lite0", "DEFAULT", (8, 16)).state_dict()
    trunk = module.net.trunk.state_dict()
    assert trunk.keys() == pretrained.keys() and all(torch.equal(trunk[k], pretrained[k]) for k in trunk)
    assert module.net.trunk.out_channels == 152 and module.net.heads["B"].subheads[0].in_channels == 152
    assert module.class_names == ["flat", "stripes", "grain"]


# --- a tiny run -------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_tiny_run_on_a_frozen_trunk_trains_the_heads_and_its_checkpoint_gives_it_back(tmp_path, monkeypatch):
    from iic.segmentation import module as segmentation_module
    from iic.segmentation.api import load, run_training

    demo = demo_source(num_images=12, size=64, seed=1)
    images = demo.images[:, :44, :60]  # sides that are no multiple of the stride
    labels = demo.labels[:, :44, :60].astype(np.uint8)
    labels[8:, :, :10] = 9  # void (the evaluation images' first 10 columns)
    npz = tmp_path / "scenes.npz"
    np.savez(npz, x_train=images[:8], y_train=labels[:8], x_val=images[8:], y_val=labels[8:],
             class_names=np.array(["flat", "stripes", "grain"]), void_label=9)

    built = {}
    build_module = segmentation_module.SegmentationRun.build_module

    def keep_the_trunk(run):
        module = build_module(run)
        built["trunk"] = {k: v.clone() for k, v in module.net.trunk.state_dict().items()}
        built["heads"] = {k: v.clone() for k, v in module.net.heads.state_dict().items()}
        return module

    monkeypatch.setattr(segmentation_module.SegmentationRun, "build_module", keep_the_trunk)
    config = backbone_config(dataset="npz", data_path=str(npz), train_splits=("train",), eval_splits=("val",),
                             mask_unlabelled=True, k_b=3, head_widths=(8,), epochs=2, batch_size=4, eval_every=1,
                             out_dir=str(tmp_path / "runs"), name="run")
    result = run_training(config, progress=False)

    head = result.results["B"]
    assert head["mapping"] == "hungarian" and set(head["reported"]["cluster_to_class"]) <= {f"cluster {i}"
                                                                                             for i in range(3)}
    confusion = head["reported"]["confusion"]
    assert list(confusion) == ["cluster 0", "cluster 1", "cluster 2"]
    assert all(list(row) == ["flat", "stripes", "grain"] for row in confusion.values())
    assert sum(sum(row.values()) for row in confusion.values()) == 4 * 44 * 50  # every labelled evaluation pixel
    assert [sum(row.values()) for row in confusion.values()] == head["cluster_sizes"]
    assert "A" not in result.results

    module = result.model.module
    trunk = module.net.trunk.state_dict()
    assert trunk.keys() == built["trunk"].keys()
    assert all(torch.equal(trunk[k], built["trunk"][k]) for k in trunk)  # not one weight or statistic moved
    checkpoint = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for key, value in trunk.items():
        assert torch.equal(checkpoint[f"net.trunk.{key}"], value)
    heads = module.net.heads.state_dict()
    assert any(not torch.equal(heads[k], built["heads"][k]) for k in heads if k.endswith("weight"))  # they trained

    loaded = load(result.run_dir)
    rng = np.random.default_rng(9)
    unseen = rng.integers(0, 256, (2, 36, 52, 3), dtype=np.uint8)
    for mine, trained in zip(loaded.predict(unseen), result.model.predict(unseen)):
        assert mine.shape == (36, 52) and np.array_equal(mine, trained)
    assert torch.equal(loaded.module.cluster_to_class, module.cluster_to_class)
    fresh = DenseBackbone("resnet18", (8,))  # another random draw: the checkpoint's trunk is not a fresh one
    assert not torch.equal(fresh.state_dict()["frozen.network.conv1.weight"],
                           loaded.module.net.trunk.state_dict()["frozen.network.conv1.weight"])
