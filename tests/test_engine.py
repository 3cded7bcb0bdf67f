"""Engine pieces that a short run does not reach: divergence, channel conversion for evaluation, config sources."""

import pytest
import torch

from iic.config import CLUSTER_PRESETS, ClusterConfig, config_to_dict, resolve_config
from iic.engine import ClusterModule, match_channels, predict_probs
from iic.errors import IICError


def test_a_non_finite_loss_stops_training_with_a_clear_error():
    module = ClusterModule(config_to_dict(ClusterConfig(k_b=3, k_a=0, num_subheads=2)), channels=1)
    module._loss_sums["B"], module._loss_counts["B"] = torch.tensor([0.5, float("nan")]), 1
    with pytest.raises(IICError, match="diverged"):
        module.close_pass()
    module._loss_sums["B"] = torch.tensor([-0.5, -0.7])
    module.close_pass()
    assert module.reported_subhead("B") == 1


def test_match_channels_converts_grey_and_rgb():
    grey = torch.tensor([[[[0, 255], [100, 7]]]], dtype=torch.uint8)
    rgb = match_channels(grey, 3)
    assert rgb.shape == (1, 3, 2, 2) and all(torch.equal(rgb[:, c : c + 1], grey) for c in range(3))
    assert torch.equal(match_channels(rgb, 1), grey)  # luma weights sum to 1
    red = torch.zeros(1, 3, 1, 1, dtype=torch.uint8)
    red[:, 0] = 200
    assert match_channels(red, 1).item() == round(0.299 * 200)
    assert match_channels(grey, 1) is grey


def test_predict_on_a_missing_head_a_is_an_error():
    module = ClusterModule(config_to_dict(ClusterConfig(k_b=3, k_a=0, num_subheads=1)), channels=1)
    images = torch.zeros(2, 1, 16, 16, dtype=torch.uint8)
    assert predict_probs(module, images, head="B").shape == (2, 3)
    with pytest.raises(IICError, match="no head A"):
        predict_probs(module, images, head="A")


def test_preset_comes_from_the_config_file_unless_given(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("preset: mnist\nlr: 0.001\n")
    config = resolve_config(ClusterConfig, CLUSTER_PRESETS, None, str(path), {"epochs": 2})
    assert (config.preset, config.dataset, config.lr, config.epochs) == ("mnist", "mnist", 0.001, 2)
    config = resolve_config(ClusterConfig, CLUSTER_PRESETS, "cifar10", str(path), {})
    assert (config.preset, config.dataset, config.lr) == ("cifar10", "cifar10", 0.001)
    assert resolve_config(ClusterConfig, CLUSTER_PRESETS, None, None, {}).preset == "digits"
