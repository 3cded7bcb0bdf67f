"""The trunks have the paper's layouts (the authors' net6c and net5g), at the sizes the presets feed them."""

import pytest
import torch
from torch import nn

from iic.clustering.backbones import ClusterNet5g, build_backbone
from iic.clustering.config import CLUSTER_PRESETS, ClusterConfig
from iic.config import config_from_dict
from iic.errors import IICError


def conv_kernels(module: nn.Module) -> set[tuple[int, ...]]:
    return {m.kernel_size for m in module.modules() if isinstance(m, nn.Conv2d)}


def test_mnist_preset_uses_the_papers_5x5_clusternet6c():
    config = config_from_dict(ClusterConfig, CLUSTER_PRESETS["mnist"])
    trunk, features = build_backbone(config.backbone, 1, config.widths, config.input_size, config.conv_size)
    assert conv_kernels(trunk) == {(5, 5)}
    assert features == 512 * 3 * 3  # 24 px → three 2×2 pools → 3×3 × 512 channels, flattened


def test_conv_size_sets_clusternet6cs_kernels_and_keeps_the_resolution():
    trunk, features = build_backbone("clusternet6c", 1, (8, 8, 8, 8), 16, conv_size=3)
    assert conv_kernels(trunk) == {(3, 3)}
    assert features == 8 * 2 * 2


@pytest.mark.parametrize("size, layer4_side", [(32, 3), (64, 5), (96, 7)])
def test_clusternet5g_pools_after_its_stem_like_the_authors_net(size, layer4_side):
    trunk = ClusterNet5g(1).eval()
    seen = {}

    def record(module, args, out):
        seen["shape"] = out.shape

    trunk.layer4.register_forward_hook(record)
    with torch.no_grad():
        features = trunk(torch.zeros(1, 1, size, size))
    assert seen["shape"][-2:] == (layer4_side, layer4_side)
    assert features.shape == (1, 512)


def test_a_torchvision_net_with_auxiliary_heads_trains_as_a_trunk():
    trunk, features = build_backbone("googlenet", 1, (), 64)
    out = trunk.train()(torch.rand(2, 1, 64, 64))  # GoogLeNet returns a tuple with its auxiliary logits in training
    assert isinstance(out, torch.Tensor) and out.shape == (2, features)


def test_a_torchvision_net_that_asserts_its_input_size_is_a_clear_error():
    with pytest.raises(IICError, match=r"backbone 'vit_b_32' cannot take 32×32 inputs: Wrong image height"):
        build_backbone("vit_b_32", 3, (), 32)
