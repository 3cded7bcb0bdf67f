import numpy as np
import pytest
import torch
from PIL import Image

from iic.clustering.config import ClusterConfig
from iic.clustering.data import image_folder, load_cluster_data, npz_arrays
from iic.errors import IICError


def test_digits_protocols():
    iic = load_cluster_data(ClusterConfig())
    assert len(iic.train_b) == len(iic.evaluation) == 1797
    assert iic.train_b.images.shape[1:] == (1, 16, 16) and iic.train_b.images.dtype == torch.uint8
    split = load_cluster_data(ClusterConfig(protocol="split"))
    assert (len(split.train_b), len(split.evaluation)) == (1500, 297)


def test_shared_mnist_npz(shared_datasets):
    train, test = npz_arrays(shared_datasets / "mnist.npz")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert set(train.labels.unique().tolist()) == set(range(10))


def test_shared_cifar_subset_as_npz(shared_datasets):
    data = load_cluster_data(ClusterConfig(dataset="npz", data_path=str(shared_datasets / "cifar10_subset5k.npz"),
                                           channels=3, image_size=32, crop_size=20, eval_crop_size=20))
    assert data.train_b.images.shape == (5000, 3, 32, 32)
    assert data.evaluation.num_classes == 10


def write_folder(root, with_classes=True):
    rng = np.random.default_rng(0)
    for i in range(6):
        folder = root / (f"class{i % 2}" if with_classes else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return root


def test_folder_with_class_subfolders(tmp_path):
    s = image_folder(write_folder(tmp_path), channels=3, size=16)
    assert s.images.shape == (6, 3, 16, 16)
    assert s.labels.tolist() == [0, 0, 0, 1, 1, 1] and s.class_names == ["class0", "class1"]


def test_flat_folder_has_no_labels(tmp_path):
    s = image_folder(write_folder(tmp_path, with_classes=False), channels=1, size=8)
    assert s.images.shape == (6, 1, 8, 8) and s.labels is None


def test_palette_and_rgba_images_are_converted(tmp_path):
    Image.new("P", (10, 10)).save(tmp_path / "p.png")
    Image.new("RGBA", (10, 10), (10, 20, 30, 40)).save(tmp_path / "rgba.png")
    assert image_folder(tmp_path, channels=3, size=10).images.shape == (2, 3, 10, 10)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such directory"),
        (lambda p: p.mkdir(), "no images found"),
        (lambda p: (p.mkdir(), (p / "bad.png").write_bytes(b"not a png at all")), "corrupt"),
        (lambda p: (p.mkdir(), Image.new("F", (8, 8)).save(p / "float.tif")), "unsupported image mode"),
    ],
)
def test_bad_folders(tmp_path, make, message):
    path = tmp_path / "images"
    make(path)
    with pytest.raises(IICError, match=message):
        image_folder(path, channels=1, size=8)


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(x_train=np.full((4, 8, 8), np.nan)), "NaN"),
        (dict(x_train=np.zeros((4, 8))), "expected images shaped"),
        (dict(x_train=np.zeros((4, 8, 8, 5), np.uint8)), "1 or 3 channels"),
        (dict(x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.zeros(3)), "expected 4 labels"),
        (dict(images=np.zeros((4, 8, 8))), "no 'x_train'"),
    ],
)
def test_bad_npz(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(IICError, match=message):
        npz_arrays(path)


def test_k_larger_than_the_data(tmp_path):
    path = tmp_path / "small.npz"
    np.savez(path, x_train=np.zeros((5, 8, 8), np.uint8))
    with pytest.raises(IICError, match="larger than the number of training images"):
        load_cluster_data(ClusterConfig(dataset="npz", data_path=str(path), image_size=8, crop_size=8,
                                        eval_crop_size=8, k_b=10))
