"""The Python interface to segmentation: iic.segmentation.train, .load, and a model's predict/evaluate on arrays,
tensors and image files; bad input is one IICError of one line."""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import iic
from iic import segmentation
from iic.errors import IICError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]  # trains on one thread



@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("runs")
    return segmentation.train(epochs=1, widths=(4, 4, 4, 4, 4, 4), out_dir=str(out_dir), name="run", progress=False)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (3, 20, 28, 3), dtype=np.uint8)  # N × H × W × 3 uint8


def test_train_writes_a_run_directory_and_returns_what_it_holds(run):
    assert run.run_dir.name == "run" and run.seconds > 0 and run.is_main_process
    for name in ("config.yaml", "metrics.csv", "results.yaml", "segmentation.png", "curves.png",
                 "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (run.run_dir / name).is_file(), name
    assert isinstance(run.model, segmentation.SegmentationModel)
    assert run.model.path == run.run_dir / "checkpoints" / "last.ckpt"
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert config["task"] == "segmentation" and config["epochs"] == 1 == run.model.config.epochs
    assert config["widths"] == [4] * 6
    saved = yaml.safe_load((run.run_dir / "results.yaml").read_text())
    assert set(run.results) >= {"A", "B"}
    assert set(run.results["B"]["reported"]) == {"pixel_acc", "miou", "iou", "cluster_to_class", "confusion"}
    for key in ("pixel_acc", "miou", "iou"):
        assert saved["B"]["reported"][key] == pytest.approx(run.results["B"]["reported"][key])
    assert run.results["B"]["reported_subhead"] == 0 and len(run.results["B"]["subhead_losses"]) == 1
    assert torch.load(run.model.path, weights_only=True)["task"] == "segmentation"


def test_load_gives_back_the_trained_model(run, images):
    model = segmentation.load(run.run_dir)
    assert model.path == run.run_dir / "checkpoints" / "last.ckpt"
    assert model.class_names == ["flat", "stripes", "grain"] and model.config.epochs == 1
    assert segmentation.load(model.path).path == model.path  # a checkpoint file too
    for mine, trained in zip(model.predict(images), run.model.predict(images)):
        assert np.array_equal(mine, trained)


def test_predict_takes_arrays_tensors_and_image_files_alike(run, images, tmp_path):
    model = segmentation.load(run.run_dir)
    maps = model.predict(images)
    assert isinstance(maps, list) and len(maps) == 3
    for labels in maps:
        assert labels.shape == (20, 28) and labels.dtype == np.int64
        assert 0 <= labels.min() and labels.max() < 3  # class ids: the run was evaluated against labels
    same = [images / 255.0,                                        # floats in [0, 1]
            list(images),                                          # a list of H × W × 3 arrays
            torch.from_numpy(images).permute(0, 3, 1, 2)]          # a tensor, N × 3 × H × W
    for other in same:
        assert all(np.array_equal(a, b) for a, b in zip(model.predict(other), maps))
    assert np.array_equal(model.predict(images[1])[0], maps[1])  # one H × W × 3 image
    for index, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{index}.png")
    from_file = model.predict(tmp_path / "1.png")
    assert len(from_file) == 1 and np.array_equal(from_file[0], maps[1])
    from_folder = model.predict(str(tmp_path))
    assert all(np.array_equal(a, b) for a, b in zip(from_folder, maps))
    assert model.predict(images, scale=0.5)[0].shape == (20, 28)  # segmented at half size, mapped back


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 16, 16), np.uint8), "images must be H×W×3 or N×H×W×3 RGB arrays, got shape (1, 2, 16, 16)"),
    (np.zeros((2, 16, 16, 4), np.uint8), "images must be H×W×3 or N×H×W×3 RGB arrays, got shape (2, 16, 16, 4)"),
    (np.zeros((2, 16, 16, 3, 1), np.uint8), "images must be H×W×3 or N×H×W×3 RGB arrays"),
    (np.full((2, 16, 16, 3), np.nan), "images must hold finite numbers"),
    (np.full((1, 16, 16, 3), 300.0), "image values must be in [0, 1] or [0, 255]"),
    ("missing.png", "no such file or directory"),
    ([], "no images given"),
    (torch.zeros(2, 16, 16, 3), "a tensor of images must be N×3×H×W, got (2, 16, 16, 3)"),
], ids=["two-dims-per-image", "four-channels", "five-dims", "nan", "out-of-range", "missing-file", "empty-list",
        "channels-last-tensor"])
def test_bad_input_is_one_clear_error(run, tmp_path, bad, message):
    if isinstance(bad, str):
        bad = tmp_path / "missing.png"
    with pytest.raises(IICError) as error:
        run.model.predict(bad)
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_bad_settings_and_paths_are_one_clear_error(run, images, tmp_path):
    for scale in (0, float("nan"), -1.0):
        with pytest.raises(IICError, match="scale must be positive and finite"):
            run.model.predict(images, scale=scale)
    with pytest.raises(IICError, match="no such checkpoint"):
        segmentation.load(tmp_path / "nothing")
    with pytest.raises(IICError, match="evaluate takes data settings .*, not epochs"):
        run.model.evaluate(epochs=3)
    with pytest.raises(IICError, match="a SegmentConfig or a preset, not both"):
        segmentation.train(iic.SegmentConfig(), preset="demo", out_dir=str(tmp_path / "runs"))
    with pytest.raises(IICError, match="unknown config key"):
        segmentation.train(no_such_setting=1, out_dir=str(tmp_path / "runs"))
    with pytest.raises(IICError, match="segmentation checkpoint, not a clustering, finetuning, vectors or sequences"):
        iic.load(run.run_dir)
    assert not (tmp_path / "runs").exists()


def test_evaluate_scores_the_trained_model_on_its_data(run):
    results = segmentation.load(run.run_dir).evaluate(accelerator="cpu")
    reported = results["B"]["reported"]
    assert 0 <= reported["pixel_acc"] <= 1 and 0 <= reported["miou"] <= 1
    assert set(reported["iou"]) == {"flat", "stripes", "grain"}
    assert reported["pixel_acc"] == pytest.approx(run.results["B"]["reported"]["pixel_acc"])
    assert results["B"]["k"] == 3 and results["A"]["k"] == 6
