"""A folder of photos clustered through a frozen backbone in one command, and new photos predicted by backbone and
head together; a weights file that does not fit is one line and leaves nothing behind."""

import csv

import numpy as np
import pytest
import torch
from helpers import in_process_error
from PIL import Image

import iic
from iic.cli import main


def write_photos(folder, count_per_class: int = 12, seed: int = 0) -> None:
    """Two classes of 40 × 40 RGB photos, red-ish and blue-ish with noise, in class sub-folders."""
    rng = np.random.default_rng(seed)
    for name, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        (folder / name).mkdir(parents=True)
        for index in range(count_per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, size=(40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{index}.png")


@pytest.fixture
def weights_file(tmp_path):
    torch.manual_seed(0)
    import torchvision

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def features_args(tmp_path, photos, weights):
    return ["train", "--dataset", "features", "--data-path", str(photos), "--backbone", "resnet18", "--weights",
            str(weights), "--backbone-size", "32", "--image-size", "40", "--feature-cache", str(tmp_path / "cache"),
            "--k-b", "2", "--k-a", "0", "--num-subheads", "4", "--epochs", "20", "--batch-size", "8", "--knn", "3",
            "--eval-every", "100", "--out-dir", str(tmp_path / "runs"), "--name", "photos", "--no-progress"]


@pytest.mark.slow
def test_a_folder_of_photos_in_one_command_then_new_photos_through_backbone_and_head(tmp_path, weights_file,
                                                                                      one_torch_thread, capsys):
    photos = tmp_path / "photos"
    write_photos(photos)
    assert main(features_args(tmp_path, photos, weights_file)) == 0
    out = capsys.readouterr().out
    assert "dataset features (24 samples of 512 features" in out and "head B (k=2)" in out
    run_dir = tmp_path / "runs" / "photos"
    assert (run_dir / "clusters.png").is_file() and (run_dir / "neighbours.npz").is_file()
    assert len(list((tmp_path / "cache").iterdir())) == 1  # the features, cached
    model = iic.load(run_dir)
    assert model.takes_images and model.module.backbone is not None

    new = tmp_path / "new"
    write_photos(new, count_per_class=3, seed=1)
    assert main(["predict", str(run_dir), str(new), "--out", str(tmp_path / "pred.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "pred.csv")))
    assert len(rows) == 6 and set(rows[0]) == {"path", "cluster", "probability"}
    by_colour = {colour: {row["cluster"] for row in rows if f"/{colour}/" in row["path"]} for colour in ("red", "blue")}
    # The backbone's weights are random, but red and blue photos are far apart in any network's features.
    assert len(by_colour["red"]) == len(by_colour["blue"]) == 1 and by_colour["red"] != by_colour["blue"]
    # The checkpoint holds the backbone: the same clusters without the weights file.
    weights_file.unlink()
    assert torch.equal(iic.load(run_dir).predict(str(new)), model.predict(str(new)))


def test_a_weights_file_that_does_not_fit_is_one_line_and_nothing_written(tmp_path, capsys):
    photos = tmp_path / "photos"
    write_photos(photos, count_per_class=3)
    import torchvision

    wrong = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), wrong)
    line = in_process_error(capsys, *features_args(tmp_path, photos, wrong))
    assert "does not fit resnet18" in line
    assert not (tmp_path / "runs").exists()
