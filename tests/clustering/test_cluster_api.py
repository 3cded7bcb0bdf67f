"""The Python interface: iic.train, iic.load, and a model's predict/evaluate on arrays, tensors and files."""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import iic
from iic.errors import IICError

pytestmark = pytest.mark.slow  # trains, or runs the iic command


@pytest.fixture(scope="module")
def run(tmp_path_factory, three_digit_npz):
    # Three trunks of the wider network learn these 400 images in 4 epochs (the slim two-trunk default needs more).
    return iic.train(dataset="npz", data_path=str(three_digit_npz), out_dir=str(tmp_path_factory.mktemp("runs")),
                     name="api", k_b=3, k_a=6, num_subheads=2, epochs=4, batch_size=100, repeats=3, lr=0.004,
                     widths=(32, 64, 128, 128), trunks=3, refit_subheads=0, progress=False)


@pytest.fixture(scope="module")
def test_images(three_digit_npz) -> np.ndarray:
    return np.load(three_digit_npz)["x_test"][:8]  # uint8, 8 × 16 × 16


def test_train_writes_a_run_directory_and_returns_what_it_holds(run):
    for name in ("config.yaml", "metrics.csv", "results.yaml", "clusters.png", "curves.png",
                 "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (run.run_dir / name).is_file(), name
    assert run.run_dir.name == "api" and run.seconds > 0 and run.is_main_process
    assert run.model.path == run.run_dir / "checkpoints" / "last.ckpt"
    saved = yaml.safe_load((run.run_dir / "results.yaml").read_text())
    assert saved["B"]["reported"] == pytest.approx(run.results["B"]["reported"])
    assert run.results["B"]["reported"]["acc"] > 0.8  # three digit classes: chance is about 1/3
    assert yaml.safe_load((run.run_dir / "config.yaml").read_text())["epochs"] == 4 == run.model.config.epochs


def test_predict_takes_arrays_tensors_and_image_files_alike(run, test_images, tmp_path):
    model = run.model
    clusters = model.predict(test_images)
    probabilities = model.predict_proba(test_images)
    assert clusters.dtype == torch.int64 and clusters.shape == (8,) and probabilities.shape == (8, 3)
    assert torch.allclose(probabilities.sum(1), torch.ones(8)) and torch.equal(probabilities.argmax(1), clusters)
    assert clusters.unique().numel() > 1
    same = [test_images / 255.0,                              # floats in [0, 1]
            test_images[..., None],                           # N × H × W × 1
            np.repeat(test_images[..., None], 3, axis=3),     # RGB, converted to the model's greyscale
            torch.from_numpy(test_images)[:, None]]           # a tensor, N × C × H × W
    for images in same:
        assert torch.allclose(model.predict_proba(images), probabilities, atol=1e-6)
    for i, image in enumerate(test_images):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    assert torch.equal(model.predict(tmp_path), clusters)
    assert torch.equal(model.predict([str(tmp_path / f"{i}.png") for i in range(8)]), clusters)


def test_load_gives_back_the_trained_model(run, test_images):
    model = iic.load(run.run_dir)
    assert model.path == run.run_dir / "checkpoints" / "last.ckpt"
    assert torch.allclose(model.predict_proba(test_images), run.model.predict_proba(test_images), atol=1e-6)
    results = model.evaluate(accelerator="cpu")
    assert results["B"]["reported"]["acc"] == pytest.approx(run.results["B"]["reported"]["acc"])
    arrays = np.load(run.model.config.data_path)
    assert sum(results["B"]["cluster_sizes"]) == len(arrays["y_train"]) + len(arrays["y_test"])  # the iic protocol


def test_bad_input_is_one_clear_error_before_anything_is_written(run, tmp_path):
    out = str(tmp_path / "runs")
    (tmp_path / "bad.yaml").write_text("k_b: 1\n")
    for call in (lambda: iic.train(k_b=1, out_dir=out), lambda: iic.train(iic.ClusterConfig(k_b=1), out_dir=out),
                 lambda: iic.train(tmp_path / "bad.yaml", out_dir=out)):
        with pytest.raises(IICError, match="k_b must be at least 2, got 1"):
            call()
    with pytest.raises(IICError, match="unknown config key"):
        iic.train(no_such_setting=1, out_dir=out)
    with pytest.raises(IICError, match="expected images shaped"):
        run.model.predict(np.zeros((2, 2, 2, 2, 2), np.uint8))
    with pytest.raises(IICError, match="NaN"):
        run.model.predict(np.full((2, 16, 16), np.nan))
    with pytest.raises(IICError, match="no such checkpoint"):
        iic.load(tmp_path / "nothing")
    with pytest.raises(IICError, match="a ClusterConfig or a preset, not both"):
        iic.train(iic.ClusterConfig(), preset="mnist", out_dir=out)
    with pytest.raises(IICError, match=r"reads as one H×W×C image, not a batch of 16 images: give a batch"):
        run.model.predict(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(IICError, match="no images given"):
        run.model.predict([])
    with pytest.raises(IICError, match="must be an array, a tensor, image files or a folder, got generator"):
        run.model.predict(image for image in np.zeros((2, 16, 16)))
    with pytest.raises(IICError, match="all image paths or all arrays, not a mix"):
        run.model.predict([str(tmp_path / "0.png"), np.zeros((16, 16))])
    with pytest.raises(IICError, match="images of different shapes"):
        run.model.predict([np.zeros((16, 16)), np.zeros((8, 8))])
    with pytest.raises(IICError, match="unknown head 'C': use A or B"):
        run.model.predict(np.zeros((2, 16, 16)), head="C")
    assert not (tmp_path / "runs").exists()


def test_paths_from_python_may_start_with_the_home_folder(run, test_images, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "new").mkdir()
    for i, image in enumerate(test_images):
        Image.fromarray(image).save(tmp_path / "new" / f"{i}.png")
    assert torch.equal(run.model.predict("~/new"), run.model.predict(test_images))
    (tmp_path / "copy.npz").write_bytes(open(run.model.config.data_path, "rb").read())
    assert run.model.evaluate(data_path="~/copy.npz", accelerator="cpu")["B"]["reported"]["acc"] == pytest.approx(
        run.results["B"]["reported"]["acc"])
    monkeypatch.setenv("HOME", str(run.run_dir.parent))
    assert iic.load("~/api").path == run.run_dir / "checkpoints" / "last.ckpt"


def test_a_three_by_h_by_w_input_is_refused_by_a_colour_model_and_read_as_three_images_by_a_greyscale_one(
        run, test_images):
    from iic.clustering.module import ClusterModule
    from iic.config import config_to_dict

    grey = run.model
    assert torch.equal(grey.predict(torch.from_numpy(test_images[:3])), grey.predict(test_images[:3]))
    colour = iic.ClusterModel(ClusterModule(config_to_dict(grey.config), channels=3))
    for images in (torch.zeros(3, 16, 16, dtype=torch.uint8), np.zeros((3, 16, 16), np.uint8)):
        with pytest.raises(IICError, match=r"one C×H×W colour image or as 3 greyscale images: give a batch"):
            colour.predict(images)
    assert colour.predict(torch.zeros(1, 3, 16, 16, dtype=torch.uint8)).shape == (1,)
    assert colour.predict(torch.zeros(3, 1, 16, 16, dtype=torch.uint8)).shape == (3,)


def test_evaluation_data_may_hold_fewer_images_than_clusters(run, tmp_path):
    few = tmp_path / "few.npz"
    np.savez(few, x_train=np.load(run.model.config.data_path)["x_train"][:2])
    results = run.model.evaluate(data_path=str(few), accelerator="cpu")  # k_b = 3 clusters, 2 images
    assert sum(results["B"]["cluster_sizes"]) == 2
