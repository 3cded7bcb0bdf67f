"""Fine-tuning's parts, without training: the labelled draw, the optimiser groups, the classifier and its views, the
checks of its settings, and the command's refusals that come before any run."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import in_process_error
from torch import nn

from iic.cli import main
from iic.clustering.config import ClusterConfig
from iic.clustering.views import EvalView
from iic.config import config_to_dict
from iic.data.subsets import labelled_subset
from iic.errors import IICError
from iic.finetuning.config import FinetuneConfig, validate_finetune_config
from iic.finetuning.module import FinetuneModule
from iic.finetuning.network import Classifier
from iic.finetuning.views import EvaluationViews, LabelledViews

# Tiny networks run on one thread: on this shared machine two threads made each forward pass some 50 times slower.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A slim IIC network of the digits preset's sizes: 16×16 greyscale images, centre crops of 14 resized to 16.
SOURCE = ClusterConfig(widths=(4, 8, 8, 8))
# Ten crops that need no resizing: 20×20 images, crops of 12, a network input of 12.
UNRESIZED = ClusterConfig(widths=(4, 8, 8, 8), image_size=20, input_size=12, crop_size=12, eval_crop_size=12,
                          tf_crop_sizes=(12, 20))
CLASSES = ["zero", "one", "seven"]


def finetune_module(source: ClusterConfig = SOURCE, channels: int = 1, **settings) -> FinetuneModule:
    return FinetuneModule(config_to_dict(FinetuneConfig(source="run", **settings)), config_to_dict(source), channels,
                          CLASSES)


def ids(parameters) -> list[int]:
    return [id(p) for p in parameters]


def uint8_images(n: int, size: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator)


# --- the labelled draw ---------------------------------------------------------------------------------------

def test_without_leave_out_a_count_of_all_the_images_takes_them_all():
    labels = np.repeat([0, 1, 2], [4, 3, 3])
    assert labelled_subset(labels, 10, leave_out=False).tolist() == list(range(10))
    assert labelled_subset(labels, 10, seed=5, stratified=False, leave_out=False).tolist() == list(range(10))
    nine = labelled_subset(labels, 9, seed=1, leave_out=False)
    assert len(set(nine.tolist())) == 9 and set(labels[nine]) == {0, 1, 2}
    with pytest.raises(IICError, match="give at least 1 and at most 10"):
        labelled_subset(labels, 11, leave_out=False)
    with pytest.raises(IICError, match="fewer than 10"):  # the default still leaves one out to score on
        labelled_subset(labels, 10)


# --- optimiser groups ----------------------------------------------------------------------------------------

def test_the_trunk_trains_at_trunk_lr_and_the_head_at_lr():
    module = finetune_module(lr=2e-3, trunk_lr=3e-5)
    (groups,) = module.optimiser_groups()
    trunk, head = groups
    assert ids(trunk["params"]) == ids(module.net.trunk.parameters()) and trunk["lr"] == 3e-5
    assert ids(head["params"]) == ids(module.net.head.parameters()) and head["lr"] == 2e-3
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    assert set(ids(trunk["params"])) | set(ids(head["params"])) == trainable  # every weight learns, in one group
    (adam,) = module.configure_optimizers()
    assert [group["lr"] for group in adam.param_groups] == [3e-5, 2e-3]


def test_from_scratch_the_trunk_trains_at_the_heads_lr():
    module = finetune_module(lr=2e-3, trunk_lr=3e-5, from_scratch=True)
    (adam,) = module.configure_optimizers()
    assert [ids(group["params"]) for group in adam.param_groups] == [ids(module.net.trunk.parameters()),
                                                                     ids(module.net.head.parameters())]
    assert [group["lr"] for group in adam.param_groups] == [2e-3, 2e-3]


def test_a_frozen_trunk_has_no_group_takes_no_gradient_and_keeps_its_statistics():
    module = finetune_module(lr=2e-3, trunk_lr=3e-5, freeze_trunk=True)
    (adam,) = module.configure_optimizers()
    assert len(adam.param_groups) == 1 and adam.param_groups[0]["lr"] == 2e-3
    assert ids(adam.param_groups[0]["params"]) == ids(module.net.head.parameters())
    assert not any(p.requires_grad for p in module.net.trunk.parameters())
    module.train()
    assert module.training and module.net.head.training
    assert not any(m.training for m in module.net.trunk.modules())  # BatchNorm keeps the IIC run's statistics
    module.eval()
    module.train()  # and again after an evaluation
    assert not any(m.training for m in module.net.trunk.modules()) and module.net.head.training
    statistics = {k: v.clone() for k, v in module.net.trunk.state_dict().items()}
    module.net(torch.rand(6, 1, 16, 16)).sum().backward()
    assert all(p.grad is None for p in module.net.trunk.parameters())
    assert all(p.grad is not None for p in module.net.head.parameters())
    for name, value in module.net.trunk.state_dict().items():
        assert torch.equal(value, statistics[name]), name


def test_an_unfrozen_trunk_trains_in_training_mode():
    module = finetune_module()
    module.train()
    assert all(m.training for m in module.net.trunk.modules())
    assert all(p.requires_grad for p in module.net.trunk.parameters())


# --- the classifier ------------------------------------------------------------------------------------------

def trunk_features(net: Classifier, images: torch.Tensor) -> int:
    return net.trunk(net.input_layer(images)).shape[1]


def test_head_width_0_is_one_linear_layer():
    net = Classifier(SOURCE, 1, 3, head_width=0)
    images = torch.rand(5, 1, 16, 16)
    assert type(net.head) is nn.Linear
    assert (net.head.in_features, net.head.out_features) == (trunk_features(net, images), 3)
    assert net(images).shape == (5, 3)


def test_the_papers_head_is_linear_batchnorm_relu_linear():
    net = Classifier(SOURCE, 1, 3, head_width=24)
    images = torch.rand(5, 1, 16, 16)
    assert [type(layer) for layer in net.head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    first, norm, _, last = net.head
    assert (first.in_features, first.out_features) == (trunk_features(net, images), 24)
    assert norm.num_features == 24 and (last.in_features, last.out_features) == (24, 3)
    assert net(images).shape == (5, 3)


def test_a_sobel_source_gives_the_classifier_its_input_layer():
    sobel = dataclasses.replace(SOURCE, sobel=True, include_rgb=False)
    net = Classifier(sobel, 3, 10, head_width=8)
    assert net.input_layer.out_channels == 2  # the Sobel gradients alone, as the IIC run's trunk takes them
    assert net(torch.rand(4, 3, 16, 16)).shape == (4, 10)


# --- views -----------------------------------------------------------------------------------------------------

def ten_crops_by_hand(images: torch.Tensor, crop: int) -> list[torch.Tensor]:
    """The four corners and the centre, then the same of the mirror image (torchvision's order), as floats."""
    x = images.float() / 255
    size = x.shape[-1]
    top = (size - crop) // 2

    def five(y: torch.Tensor) -> list[torch.Tensor]:
        return [y[..., :crop, :crop], y[..., :crop, -crop:], y[..., -crop:, :crop], y[..., -crop:, -crop:],
                y[..., top:top + crop, top:top + crop]]

    return five(x) + five(x.flip(-1))


def test_ten_crops_are_the_corners_and_centre_and_their_mirror_images():
    images = uint8_images(3, 20)
    views = EvaluationViews(UNRESIZED, ten_crops=True)(images)
    expected = ten_crops_by_hand(images, 12)
    assert len(views) == 10
    for view, crop in zip(views, expected):
        assert view.shape == (3, 1, 12, 12) and torch.allclose(view, crop)


def test_ten_crops_are_resized_to_the_networks_input_size():
    images = uint8_images(3, 16)
    views = EvaluationViews(SOURCE, ten_crops=True)(images)  # crops of 14, resized to 16
    assert len(views) == 10 and all(view.shape == (3, 1, 16, 16) for view in views)
    for view, crop in zip(views, ten_crops_by_hand(images, 14)):
        resized = F.interpolate(crop, size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
        assert torch.allclose(view, resized, atol=1e-6)


def test_without_ten_crops_the_one_view_is_the_iic_runs_centre_crop():
    images = uint8_images(3, 16)
    (view,) = EvaluationViews(SOURCE, ten_crops=False)(images)
    assert torch.equal(view, EvalView(SOURCE)(images))


def test_ten_crop_logits_are_the_mean_over_the_ten_views():
    module = finetune_module(UNRESIZED, ten_crop=True, head_width=0).eval()
    images = uint8_images(4, 20, seed=1) // 4
    images[..., :8, :8] = 255  # a bright top-left corner: the crops see different things
    with torch.no_grad():
        module.net.head.weight.mul_(1000)  # an untrained trunk's features differ little: tell the views apart
        per_view = torch.stack([module.net(crop) for crop in ten_crops_by_hand(images, 12)])
    logits = module.logits(images)
    assert logits.shape == (4, 3) and torch.allclose(logits, per_view.mean(dim=0), atol=1e-4)
    assert (per_view - per_view.mean(dim=0)).abs().amax(dim=(1, 2)).min() > 1e-2  # no view alone gives the mean
    probabilities = module.predict_probs(images)
    assert torch.allclose(probabilities, logits.softmax(dim=1), atol=1e-6)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(4))


def test_one_view_logits_are_the_centre_crops():
    module = finetune_module(head_width=8).eval()
    images = uint8_images(4, 16, seed=2)
    with torch.no_grad():
        assert torch.allclose(module.logits(images), module.net(EvalView(SOURCE)(images)), atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_labelled_views_are_network_sized_and_in_range(channels):
    colour = dataclasses.replace(SOURCE, flip=True, jitter=(0.4, 0.4, 0.4, 0.1))
    views = LabelledViews(colour, channels, dataset_views=True, affine_p=1.0, cutout_p=1.0)
    images = uint8_images(8, 16, channels)
    torch.manual_seed(0)
    first, second = views(images), views(images)
    for out in (first, second):
        assert out.shape == (8, channels, 16, 16) and out.dtype == torch.float32
        assert 0 <= out.min() and out.max() <= 1
    assert not torch.allclose(first, second)  # each call draws its own augmentations


def test_without_dataset_views_affine_or_cutout_a_labelled_view_is_the_centre_crop():
    images = uint8_images(4, 16)
    plain = LabelledViews(SOURCE, 1, dataset_views=False, affine_p=0.0, cutout_p=0.0)
    assert torch.equal(plain(images), EvalView(SOURCE)(images))


def test_cutout_sets_a_rectangle_to_zero():
    white = torch.full((6, 1, 16, 16), 255, dtype=torch.uint8)
    torch.manual_seed(0)
    out = LabelledViews(SOURCE, 1, dataset_views=False, affine_p=0.0, cutout_p=1.0)(white)
    zero = out == 0
    assert torch.all(zero | torch.isclose(out, torch.ones_like(out)))  # untouched, or cut out
    for image in zero[:, 0]:
        rows, columns = image.any(dim=1).nonzero()[:, 0], image.any(dim=0).nonzero()[:, 0]
        box = (rows.max() - rows.min() + 1) * (columns.max() - columns.min() + 1)
        assert 0 < image.sum() == box  # one filled rectangle
        assert 0.01 <= image.float().mean() <= 0.3  # of 2–25% of the image (its side rounded to pixels)


# --- settings ------------------------------------------------------------------------------------------------

def test_the_default_settings_pass_their_checks():
    validate_finetune_config(FinetuneConfig(source="run"))
    validate_finetune_config(FinetuneConfig(source="run", validation=0.5, freeze_trunk=True, head_width=0))


@pytest.mark.parametrize("settings, message", [
    (dict(source=None), "fine-tuning needs an IIC run: give its directory or checkpoint"),
    (dict(batch_size=1), "batch_size must be at least 2, got 1"),
    (dict(validation=1.0), "validation must be a fraction in [0, 1), got 1.0"),
    (dict(validation=-0.1), "validation must be a fraction in [0, 1), got -0.1"),
    (dict(affine_p=1.5), "affine_p must be a probability (0 to 1), got 1.5"),
    (dict(cutout_p=-0.5), "cutout_p must be a probability (0 to 1), got -0.5"),
    (dict(from_scratch=True, freeze_trunk=True),
     "from_scratch and freeze_trunk together would train a head on random features: choose one"),
    (dict(head_width=-1), "head_width must be 0 (a linear head) or positive, got -1"),
    (dict(trunk_lr=0.0), "trunk_lr must be positive and at most 10, got 0.0"),
    (dict(epoch_images=-1), "epoch_images must be 0 (one pass over the labels) or more, got -1"),
    (dict(lr=-1.0), "lr must be positive and at most 10, got -1.0"),
])
def test_bad_settings_are_one_clear_error(settings, message):
    with pytest.raises(IICError) as error:
        validate_finetune_config(FinetuneConfig(**{"source": "run", **settings}))
    assert str(error.value) == message


def test_python_checks_its_settings_before_it_reads_the_run_or_writes_anything(tmp_path):
    import iic

    out_dir = tmp_path / "runs"
    with pytest.raises(IICError, match="batch_size must be at least 2"):
        iic.finetune(tmp_path / "no-such-run", batch_size=1, out_dir=str(out_dir), progress=False)
    with pytest.raises(IICError, match="fine-tuning needs an IIC run"):
        iic.finetune(out_dir=str(out_dir), progress=False)
    with pytest.raises(IICError, match="no such checkpoint"):
        iic.finetune(tmp_path / "no-such-run", out_dir=str(out_dir), progress=False)
    with pytest.raises(IICError, match="unknown config key"):
        iic.finetune(tmp_path / "no-such-run", no_such_setting=1, out_dir=str(out_dir), progress=False)
    assert not out_dir.exists()


def test_the_preset_defaults_to_the_iic_runs_where_one_has_its_name(tmp_path):
    from iic.finetuning.api import default_preset

    for preset, expected in (("mnist", "mnist"), ("stl10", "stl10"), ("digits", "default")):
        run = tmp_path / preset
        run.mkdir()
        (run / "config.yaml").write_text(f"task: clustering\npreset: {preset}\n")
        assert default_preset(run) == expected
        assert default_preset(run / "checkpoints" / "last.ckpt") == expected  # a checkpoint in its run
    assert default_preset(tmp_path / "elsewhere.ckpt") == "default"  # away from its run: no config.yaml
    assert default_preset(None) == "default"


def test_scores_are_summed_up_in_one_line():
    from iic.finetuning.cli import format_scores

    results = {"evaluated_on": "test split", "images": 139, "acc": 0.91367, "chosen_pass": 3,
               "per_class_acc": {"0": 1.0, "1": 0.8, "2": 0.95}}
    assert format_scores(results) == ("accuracy 91.37% on 139 images (test split, pass 3 chosen on the validation "
                                      "part); lowest class: 1 80.0%")
    del results["chosen_pass"]
    assert "(test split); lowest class: 1 80.0%" in format_scores(results)


# --- the command's refusals before any run ---------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--labels", "10"], "iic finetune needs an IIC run: iic finetune RUN_OR_CKPT --labels N"),
    (["RUN", "--resume", "OTHER"], "give the IIC run to fine-tune, or --resume a fine-tuning run, not both"),
    (["RUN", "--batch-size", "1"], "batch_size must be at least 2, got 1"),
    (["RUN", "--from-scratch", "--freeze-trunk"], "from_scratch and freeze_trunk together"),
    (["RUN", "--validation", "1"], "validation must be a fraction in [0, 1)"),
    (["RUN", "--labels", "many"], "config value labels='many': expected float"),
    (["RUN", "--preset", "imagenet"], "unknown preset 'imagenet': choose one of default, mnist, cifar10, stl10"),
])
def test_bad_command_lines_are_one_clear_line_and_write_nothing(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    argv = [str(tmp_path / "no-such-run") if arg == "RUN" else arg for arg in args]
    assert message in in_process_error(capsys, "finetune", *argv, "--out-dir", str(tmp_path / "runs"))
    assert not any(tmp_path.iterdir())


def test_a_missing_run_is_one_clear_line(tmp_path, capsys):
    line = in_process_error(capsys, "finetune", str(tmp_path / "no-such-run"), "--out-dir", str(tmp_path / "runs"))
    assert line == f"iic: error: no such checkpoint: {tmp_path / 'no-such-run'}"
    assert not any(tmp_path.iterdir())


def test_help_explains_every_setting(capsys):
    from iic.config import field_comments

    assert {f.name for f in dataclasses.fields(FinetuneConfig)} - set(field_comments(FinetuneConfig)) == set()
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--labels", "--from-scratch", "--freeze-trunk", "--head-width", "--validation", "--ten-crop",
                 "--resume", "--trunk-lr"):
        assert flag in text, flag


def test_a_pass_repeats_the_labelled_set_in_new_orders():
    from iic.finetuning.module import LabelledPasses

    torch.manual_seed(0)
    sampler = LabelledPasses(size=7, num_samples=30)
    first, second = list(sampler), list(sampler)
    assert len(sampler) == len(first) == 30 and first != second
    for draw in (first, second):
        assert sorted(draw[:7]) == list(range(7)) and sorted(draw[7:14]) == list(range(7))  # whole rounds first
        assert np.bincount(draw, minlength=7).min() >= 4
