"""Engine pieces that a short run does not reach: divergence, channel conversion for evaluation, config sources."""

import pytest
import torch

from iic.config import CLUSTER_PRESETS, ClusterConfig, config_from_dict, config_to_dict, resolve_config
from iic.engine import ClusterModule, predict_probs
from iic.errors import IICError


def test_a_non_finite_loss_stops_training_with_a_clear_error():
    module = ClusterModule(config_to_dict(ClusterConfig(k_b=3, k_a=0, num_subheads=2)), channels=1)
    module._loss_sums["B"], module._loss_counts["B"] = torch.tensor([0.5, float("nan")]), 1
    with pytest.raises(IICError, match="diverged"):
        module.close_pass()
    module._loss_sums["B"] = torch.tensor([-0.5, -0.7])
    module.close_pass()
    assert module.reported_subhead("B") == 1


def test_evaluate_converts_images_to_the_models_channels():
    from iic.data.clustering import ImageSet
    from iic.engine import evaluate

    config = ClusterConfig(k_b=3, k_a=0, num_subheads=1, channels=3)
    module = ClusterModule(config_to_dict(config), channels=3)
    grey = ImageSet(torch.randint(0, 256, (12, 1, 16, 16), dtype=torch.uint8), torch.arange(12) % 3)
    results = evaluate(module, grey, config)  # an RGB model scored on greyscale digits
    assert 0 < results["B"]["reported"]["acc"] <= 1


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


def test_a_yaml_boolean_is_not_a_number():
    with pytest.raises(IICError, match="expected int"):
        config_from_dict(ClusterConfig, {"epochs": True})
    with pytest.raises(IICError, match="expected float"):
        config_from_dict(ClusterConfig, {"lr": False})
    assert config_from_dict(ClusterConfig, {"epochs": 3.0, "flip": "yes"}).epochs == 3


def test_cosine_schedule_takes_the_lr_from_its_value_down_to_zero_over_the_run(three_digit_npz, tmp_path):
    from iic.data.clustering import load_cluster_data
    from iic.engine import fit

    config = ClusterConfig(dataset="npz", data_path=str(three_digit_npz), k_b=3, k_a=0, num_subheads=1, epochs=2,
                           batch_size=100, repeats=2, lr=0.004, lr_schedule="cosine", out_dir=str(tmp_path), name="run")
    module, _ = fit(config, load_cluster_data(config), tmp_path / "run", enable_progress_bar=False)
    steps, scheduler = module.trainer.global_step, module.lr_schedulers()
    assert steps == scheduler.T_max > 2  # every step of the run
    assert scheduler.base_lrs == [0.004]
    assert module.optimizers().param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["lr_schedulers"][0]["last_epoch"] == steps  # saved with the run: --resume continues it
