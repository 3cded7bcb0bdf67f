"""The torchvision datasets, read from their own on-disk formats (tiny fakes written here; nothing downloaded).

torchvision checks CIFAR's and STL-10's files against their MD5 sums, which fakes cannot match: those checks
are switched off, the readers are torchvision's own.
"""

import pickle
import re
import struct

import numpy as np
import pytest
import torch

from iic.clustering.config import ClusterConfig
from iic.clustering.data import load_cluster_data

RNG = np.random.default_rng(0)


def write_idx(path, array: np.ndarray) -> None:
    """MNIST's IDX format: a big-endian magic number (unsigned bytes, number of dimensions), then the sizes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def config(dataset, root, **overrides) -> ClusterConfig:
    return ClusterConfig(dataset=dataset, data_path=str(root), k_b=2, k_a=3, **overrides)


def test_mnist_from_torchvisions_raw_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    train_images, test_images = RNG.integers(0, 256, (5, 28, 28)), RNG.integers(0, 256, (3, 28, 28))
    write_idx(raw / "train-images-idx3-ubyte", train_images)
    write_idx(raw / "train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 9]))
    write_idx(raw / "t10k-images-idx3-ubyte", test_images)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.array([4, 5, 6]))
    data = load_cluster_data(config("mnist", tmp_path, image_size=28))
    assert len(data.train_b) == len(data.evaluation) == 8 and data.channels == 1  # protocol iic: train + test
    assert data.evaluation.labels.tolist() == [0, 1, 2, 3, 9, 4, 5, 6]
    assert torch.equal(data.evaluation.images[5, 0], torch.from_numpy(test_images[0].astype(np.uint8)))
    split = load_cluster_data(config("mnist", tmp_path, image_size=28, protocol="split"))
    assert len(split.train_b) == 5 and split.evaluation.labels.tolist() == [4, 5, 6]


def write_pickle(path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def cifar_rows(n: int) -> np.ndarray:
    return RNG.integers(0, 256, (n, 3 * 32 * 32)).astype(np.uint8)  # rows of R, then G, then B planes


def test_cifar10_from_its_python_batches(tmp_path, monkeypatch):
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
    folder = tmp_path / "cifar-10-batches-py"
    rows = cifar_rows(12)
    for i in range(5):
        write_pickle(folder / f"data_batch_{i + 1}", {"data": rows[2 * i:2 * i + 2], "labels": [i, i + 5]})
    write_pickle(folder / "test_batch", {"data": rows[10:], "labels": [7, 8]})
    write_pickle(folder / "batches.meta", {"label_names": [f"name{i}" for i in range(10)]})
    data = load_cluster_data(config("cifar10", tmp_path, image_size=32, protocol="split"))
    assert len(data.train_b) == 10 and data.evaluation.labels.tolist() == [7, 8] and data.channels == 3
    assert data.evaluation.class_names[7] == "name7"
    first = rows[10].reshape(3, 32, 32)  # channel planes, row-major: the image is channels-first
    assert torch.equal(data.evaluation.images[0], torch.from_numpy(first))


def test_cifar100_is_labelled_by_its_20_superclasses(tmp_path, monkeypatch):
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
    folder = tmp_path / "cifar-100-python"
    write_pickle(folder / "train",
                 {"data": cifar_rows(4), "fine_labels": [0, 50, 99, 3], "coarse_labels": [4, 19, 0, 4]})
    write_pickle(folder / "test", {"data": cifar_rows(2), "fine_labels": [1, 2], "coarse_labels": [7, 19]})
    write_pickle(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                                   "coarse_label_names": [f"super{i}" for i in range(20)]})
    data = load_cluster_data(config("cifar100-20", tmp_path, image_size=32))
    assert data.evaluation.labels.tolist() == [4, 19, 0, 4, 7, 19]
    assert data.evaluation.num_classes == 20 and data.evaluation.class_names[19] == "super19"


def test_stl10_heads_a_also_train_on_the_unlabelled_images(tmp_path, monkeypatch):
    monkeypatch.setattr("torchvision.datasets.stl10.check_integrity", lambda *args, **kwargs: True)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    images = {split: RNG.integers(0, 256, (n, 3, 96, 96)).astype(np.uint8)
              for split, n in (("train", 3), ("test", 2), ("unlabeled", 4))}
    for split, array in images.items():
        (folder / f"{split}_X.bin").write_bytes(array.transpose(0, 1, 3, 2).tobytes())  # STL-10 stores columns first
    (folder / "train_y.bin").write_bytes(bytes([1, 2, 10]))  # 1-based on disk
    (folder / "test_y.bin").write_bytes(bytes([3, 4]))
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)))
    data = load_cluster_data(config("stl10", tmp_path, image_size=96))
    assert len(data.train_b) == len(data.evaluation) == 5 and len(data.train_a) == 9
    assert data.evaluation.labels.tolist() == [0, 1, 9, 2, 3] and data.train_a.labels is None
    assert torch.equal(data.evaluation.images[0], torch.from_numpy(images["train"][0]))
    assert torch.equal(data.train_a.images[-1], torch.from_numpy(images["unlabeled"][-1]))


@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "cifar100-20", "stl10"])
def test_a_missing_dataset_says_how_to_get_it(tmp_path, dataset):
    from iic.errors import IICError

    with pytest.raises(IICError,
                       match=rf"^{re.escape(dataset)} not found under {re.escape(str(tmp_path))}: pass --download"):
        load_cluster_data(config(dataset, tmp_path))
