"""What a vector run trains and evaluates on: its samples (from a file, from scikit-learn's bundled tables, MNIST's
pixels, or images through a frozen backbone), and what pairs them (an embedding for the neighbours, given pairs, a
partner array)."""

import dataclasses
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iic.data.subsets import protocol_sets
from iic.data.vectors import VectorSet, default_feature_names, read_vectors, vectors_from_array
from iic.errors import IICError
from iic.vectors.config import VectorConfig


@dataclass
class VectorData:
    """The samples heads A and B train on, those evaluated, and the pairing the user gave for the training ones."""

    train: VectorSet
    evaluation: VectorSet
    images: torch.Tensor | None = None  # uint8 images of the evaluated samples (dataset features), for the picture
    embedding: np.ndarray | None = None  # N × E, the space of the neighbour graph (else the features)
    given_pairs: np.ndarray | None = None  # M × 2 training-sample indices
    partner: np.ndarray | None = None  # N × D, row i paired with training sample i
    backbone: Any = None  # the FrozenBackbone that computed the features (dataset features)

    @property
    def num_features(self) -> int:
        return self.train.features.shape[1]


@dataclass
class Arrays:
    """What a user gave from Python instead of files."""

    x: Any
    y: Any = None
    pairs: Any = None
    partner: Any = None
    embedding: Any = None


def concat(first: VectorSet, second: VectorSet | None) -> VectorSet:
    if second is None:
        return first
    labels = None if first.labels is None or second.labels is None else np.concatenate([first.labels, second.labels])
    return VectorSet(np.concatenate([first.features, second.features]), labels, first.class_names,
                     first.feature_names)


def sklearn_table(name: str) -> VectorSet:
    """scikit-learn's bundled digits (64 pixels), wine (13 measurements) or breast-cancer (30) tables."""
    from sklearn import datasets

    loader = {"digits": datasets.load_digits, "wine": datasets.load_wine,
              "breast-cancer": datasets.load_breast_cancer}[name]
    bunch = loader()
    names = [str(n) for n in bunch.target_names] if name != "digits" else [str(i) for i in range(10)]
    feature_names = ([str(n) for n in bunch.feature_names] if name != "digits"
                     else default_feature_names(bunch.data.shape[1]))
    return VectorSet(bunch.data.astype(np.float32), bunch.target.astype(np.int64), names, feature_names)


def image_splits(config: VectorConfig, dataset: str, channels: int, size: int):
    """A clustering dataset's images (train, test) through the image task's readers."""
    from iic.clustering.config import ClusterConfig
    from iic.clustering.data import load_splits

    image_config = ClusterConfig(dataset=dataset, data_path=config.data_path, download=config.download,
                                 channels=channels, image_size=size, input_size=size, crop_size=size,
                                 eval_crop_size=size, tf_crop_sizes=(size, size))
    splits = load_splits(image_config, unlabelled=False)
    return splits.train, splits.test


def pixel_vectors(images) -> VectorSet:
    """Images (uint8 N × C × H × W) as vectors of their pixels in [0, 1]."""
    flat = images.images.reshape(len(images.images), -1).numpy().astype(np.float32) / 255.0
    labels = None if images.labels is None else images.labels.numpy().astype(np.int64)
    return VectorSet(flat, labels, images.class_names, default_feature_names(flat.shape[1]))


def backbone_identity(backbone) -> str:
    """What a backbone's weights are, for the feature cache: a hash of its state (the same for a run's pretrained
    backbone and the copy its checkpoint holds)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, value in backbone.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return f"state:{digest.hexdigest()}"


def frozen_features(config: VectorConfig, progress: bool = True, backbone: Any = None) -> tuple[
        VectorSet, VectorSet | None, torch.Tensor, torch.Tensor | None, Any]:
    """The images of ``config.images`` through the frozen backbone (``backbone``, else the config's pretrained one):
    (train, test) features, their images, and the backbone."""
    from iic.vectors.features import cached_features, pretrained_backbone

    dataset = config.images
    if dataset in ("folder", "npz") and not config.data_path:
        raise IICError(f"dataset features with images {dataset} needs --data-path (the {dataset} of images)")
    train, test = image_splits(config, dataset, 3, config.image_size)
    if config.protocol == "split" and test is None:  # before minutes of features
        raise IICError(f"protocol 'split' needs a test split, and images {dataset} have none: use --protocol iic")
    if backbone is None:
        backbone = pretrained_backbone(config.backbone, config.weights, config.backbone_size)
    cache = os.path.expanduser(config.feature_cache) if config.feature_cache else None
    identity = backbone_identity(backbone)
    sets = []
    for images in (train, test):
        if images is None:
            sets.append(None)
            continue
        features, hit = cached_features(backbone, images.images, identity, cache, progress=progress)
        if progress and hit:
            print(f"iic: features of {len(images)} images through {config.backbone} read from {cache}",
                  file=sys.stderr, flush=True)
        labels = None if images.labels is None else images.labels.numpy().astype(np.int64)
        sets.append(VectorSet(features, labels, images.class_names, default_feature_names(features.shape[1])))
    return sets[0], sets[1], train.images, None if test is None else test.images, backbone


def read_aligned(path: str, what: str) -> np.ndarray:
    """An .npy/.npz/.csv array given alongside the data (an embedding, pairs, a partner array)."""
    vectors, extra = read_vectors(Path(path).expanduser())
    if extra is not None:
        raise IICError(f"{path}: {what} is one array (x), not train and test splits")
    return vectors.features


def read_index_pairs(path: str) -> np.ndarray:
    """Given pairs from a file: an .npy keeps its integers; .npz and .csv values are read as float32, whole up to
    2**24, which the indices must stay below."""
    path = str(Path(path).expanduser())
    if path.lower().endswith(".npy") and Path(path).is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            pass  # read_aligned says what is wrong with it
    pairs = read_aligned(path, "pairs")
    if pairs.size and np.abs(pairs).max() >= 2**24:
        raise IICError(f"{path}: sample indices from 2**24 on are not exact in this file type: save the pairs as an "
                       ".npy of integers")
    return pairs


def data_splits(config: VectorConfig, arrays: Arrays | None, progress: bool, backbone: Any = None) -> tuple[
        VectorSet, VectorSet | None, torch.Tensor | None, Any]:
    """The dataset's train and test splits (test None if it has none), and for dataset features the evaluated images
    and the backbone."""
    if arrays is not None:
        return vectors_from_array(arrays.x, arrays.y, "x"), None, None, None
    name = config.dataset
    if name == "vectors":
        if not config.data_path:
            raise IICError("dataset 'vectors' needs --data-path FILE (.npy, .npz or .csv)")
        train, test = read_vectors(Path(config.data_path).expanduser(), config.label_column)
        return train, test, None, None
    if config.label_column is not None:
        raise IICError("--label-column names a column of a CSV file (dataset vectors)")
    if name in ("digits", "wine", "breast-cancer"):
        return sklearn_table(name), None, None, None
    if name == "mnist":
        train, test = image_splits(config, "mnist", 1, 28)
        return pixel_vectors(train), None if test is None else pixel_vectors(test), None, None
    train, test, train_images, test_images, backbone = frozen_features(config, progress, backbone)
    images = (torch.cat([train_images, test_images]) if config.protocol == "iic" and test_images is not None
              else test_images if config.protocol == "split" else train_images)
    return train, test, images, backbone


def load_vector_data(config: VectorConfig, training: bool = True, arrays: Arrays | None = None,
                     progress: bool = True, backbone: Any = None) -> VectorData:
    """The samples a run trains on and evaluates, per the dataset and protocol, with the user's pairing read and
    checked (``training``: also that there are more samples than clusters and neighbours). ``backbone``: the frozen
    backbone of a trained model, for dataset features (else the config's pretrained one)."""
    if config.data_path:
        config = dataclasses.replace(config, data_path=os.path.expanduser(config.data_path))
    train, test, images, backbone = data_splits(config, arrays, progress, backbone)
    if test is not None and test.features.shape[1] != train.features.shape[1]:
        raise IICError(f"the test split has {test.features.shape[1]} features and the training split "
                       f"{train.features.shape[1]}")
    train_set, evaluation = protocol_sets(config.protocol, config.dataset, train, test, concat)
    data = VectorData(train_set, evaluation, images, backbone=backbone)
    if training:
        check_sizes(config, train_set)
        read_pairing(config, data, arrays)
    return data


def check_sizes(config: VectorConfig, train: VectorSet) -> None:
    count = len(train)
    for k, head in ((config.k_b, "k_b"), (config.k_a, "k_a")):
        if k > count:
            raise IICError(f"{head}={k} is larger than the number of training samples ({count})")
    if config.pairs in ("knn", "knn+noise") and config.knn >= count:
        raise IICError(f"{count} samples cannot have {config.knn} neighbours each: give --knn at most {count - 1}")


def read_pairing(config: VectorConfig, data: VectorData, arrays: Arrays | None) -> None:
    """The embedding, given pairs or partner array of the training samples, from files or from Python."""
    count, dims = data.train.features.shape
    embedding = arrays.embedding if arrays is not None and arrays.embedding is not None else None
    if embedding is None and config.embedding_path:
        embedding = read_aligned(config.embedding_path, "an embedding")
    if embedding is not None:
        embedding = vectors_from_array(embedding, source="embedding").features
        if len(embedding) != count:
            raise IICError(f"the embedding has {len(embedding)} rows and there are {count} training samples: "
                           "give one row per training sample, in the same order")
        data.embedding = embedding
    if config.pairs != "given":
        if arrays is not None and (arrays.pairs is not None or arrays.partner is not None):
            raise IICError(f"pairs and partner are for pairs='given', and pairs is {config.pairs!r}")
        return
    from iic.pairs import given_pairs

    pairs = arrays.pairs if arrays is not None else None
    partner = arrays.partner if arrays is not None else None
    if pairs is None and partner is None:
        if config.pairs_path:
            pairs = read_index_pairs(config.pairs_path)
        elif config.partner_path:
            partner = read_aligned(config.partner_path, "a partner array")
        else:
            raise IICError("pairs given: give --pairs-path (M × 2 sample indices) or --partner-path (an aligned array)")
    if (pairs is None) == (partner is None):
        raise IICError("pairs given: give pairs (M × 2 sample indices) or a partner array, one of them")
    if pairs is not None:
        data.given_pairs = given_pairs(pairs, count)
        return
    partner = vectors_from_array(partner, source="partner").features
    if partner.shape != (count, dims):
        raise IICError(f"the partner array is shaped {partner.shape} and the training samples {(count, dims)}: "
                       "row i of it pairs with training sample i, so the shapes must agree")
    data.partner = partner
