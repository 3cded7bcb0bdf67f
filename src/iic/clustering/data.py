"""Image sets for clustering, held in memory as uint8 N × C × H × W tensors.

Sources: scikit-learn's bundled digits (the embedded default), MNIST, CIFAR-10, CIFAR-100 with its 20
superclasses and STL-10 through torchvision, ``.npz`` arrays, and folders of images.
"""

import dataclasses
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from iic.clustering.config import ClusterConfig
from iic.data.images import is_image_file, list_image_files, load_image
from iic.data.npz import npz_splits, open_npz
from iic.data.subsets import protocol_sets
from iic.errors import IICError

DEFAULT_ROOT = Path.home() / ".cache" / "iic" / "datasets"


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 N × C × H × W
    labels: torch.Tensor | None  # int64 N, or None when unlabelled
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return (len(self.class_names) if self.class_names
                else int(self.labels.max()) + 1 if self.labels is not None else 0)


@dataclass
class ClusterData:
    """What a run trains heads A and B on, and what it evaluates on."""

    train_a: ImageSet
    train_b: ImageSet
    evaluation: ImageSet
    channels: int


def concat(*sets: ImageSet) -> ImageSet:
    labels = None
    if all(s.labels is not None for s in sets):
        labels = torch.cat([s.labels for s in sets])
    return ImageSet(torch.cat([s.images for s in sets]), labels, sets[0].class_names)


def images_from_array(array: np.ndarray, source: str, channels_last: bool = True) -> torch.Tensor:
    """An N × H × W, N × H × W × C or N × C × H × W array (C = 1 or 3) as a uint8 tensor N × C × H × W.

    With ``channels_last`` a 4-d array is read as N × H × W × C unless only its second axis can hold the channels;
    without it, as N × C × H × W.
    """
    array = np.asarray(array)
    shape = array.shape  # as given, for the messages
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim != 4:
        raise IICError(f"{source}: expected images shaped N×H×W, N×H×W×C or N×C×H×W, got shape {shape}")
    elif channels_last and (shape[3] in (1, 3) or shape[1] not in (1, 3)):
        array = array.transpose(0, 3, 1, 2)
    if array.shape[1] not in (1, 3):
        raise IICError(f"{source}: expected 1 or 3 channels, got shape {shape}")
    if array.shape[0] == 0:
        raise IICError(f"{source}: contains no images")
    if 0 in array.shape[2:]:
        raise IICError(f"{source}: images have no pixels (shape {shape})")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            raise IICError(f"{source}: images must be real numbers, got dtype {array.dtype}")
        floats = np.issubdtype(array.dtype, np.floating)
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise IICError(f"{source}: images contain NaN or infinite values")
        if array.min() < 0 or array.max() > 255:
            raise IICError(f"{source}: pixel values must lie in [0, {'1] or [0, ' if floats else ''}255], "
                           f"got [{array.min():g}, {array.max():g}]")
        if floats and array.max() <= 1.0:  # whole numbers are 0…255 whatever their type, as uint8 ones
            array = array * 255
        array = np.rint(array).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(array))


def labels_from_array(array: np.ndarray, count: int, source: str) -> np.ndarray:
    array = np.asarray(array)
    if array.shape == (count, 1):  # a column, as Keras' datasets give them
        array = array[:, 0]
    if array.shape != (count,):
        raise IICError(f"{source}: expected {count} labels, got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        if (not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all()
                or (array != np.round(array)).any()):
            raise IICError(f"{source}: labels must be whole numbers "
                           f"(got dtype {array.dtype}, or NaN/fractional values)")
    if array.size and (array.min() < -2**63 or array.max() >= 2**63):  # would wrap around as int64
        raise IICError(f"{source}: labels must lie in the int64 range, got [{array.min():g}, {array.max():g}]")
    return array.astype(np.int64)


def consecutive_labels(*splits: np.ndarray) -> tuple[list[torch.Tensor], list[str]]:
    """Label values (any whole numbers, negative ones too: ±1 is two classes) as class ids 0…C−1 by one mapping
    for all splits, and the values as class names."""
    values = np.unique(np.concatenate(splits))
    ids = [torch.from_numpy(np.searchsorted(values, y)) for y in splits]
    return ids, [str(v) for v in values]


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-2:] == (size, size):
        return images
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)


# --- sources ---------------------------------------------------------------------------------------

def digits() -> tuple[ImageSet, ImageSet]:
    """scikit-learn's 1797 bundled 8×8 digits (values 0–16); the first 1500 are 'train', the rest 'test'."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.rint(bunch.images * (255 / 16)).astype(np.uint8))[:, None]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    names = [str(i) for i in range(10)]
    return ImageSet(images[:1500], labels[:1500], names), ImageSet(images[1500:], labels[1500:], names)


def _root(config: ClusterConfig) -> Path:
    """Where torchvision datasets are looked for: --data-path, else $IIC_DATA, else ~/.cache/iic/datasets."""
    return Path(config.data_path or os.environ.get("IIC_DATA") or DEFAULT_ROOT).expanduser()


def _torchvision(factory, config: ClusterConfig, **kwargs):
    root = _root(config)
    try:
        return factory(root=str(root), download=config.download, **kwargs)
    except RuntimeError as exc:
        message = str(exc).lower()
        if "not found" in message or "corrupted" in message:
            raise IICError(f"{config.dataset} not found under {root}: "
                           "pass --download to fetch it, or --data-path to its folder") from None
        if "download" in message:  # torchvision wraps its mirrors' failures
            reason = [line for line in str(exc).splitlines() if line.strip()][-1].strip()  # the last mirror's answer
            raise IICError(f"cannot download {config.dataset} to {root}: {reason}") from None
        raise
    except OSError as exc:  # no network (URLError), or the folder cannot be written
        raise IICError(f"cannot {'download' if config.download else 'read'} {config.dataset} under {root}: "
                       f"{getattr(exc, 'reason', None) or exc.strerror or exc}") from None


def mnist(config: ClusterConfig) -> tuple[ImageSet, ImageSet]:
    from torchvision.datasets import MNIST

    names = [str(i) for i in range(10)]
    sets = [_torchvision(MNIST, config, train=train) for train in (True, False)]
    return tuple(ImageSet(d.data[:, None].clone(), d.targets.long().clone(), names) for d in sets)  # type: ignore[return-value]


def cifar10(config: ClusterConfig) -> tuple[ImageSet, ImageSet]:
    from torchvision.datasets import CIFAR10

    out = []
    for train in (True, False):
        d = _torchvision(CIFAR10, config, train=train)
        out.append(ImageSet(images_from_array(d.data, "CIFAR-10"), torch.tensor(d.targets), list(d.classes)))
    return tuple(out)  # type: ignore[return-value]


def cifar100_20(config: ClusterConfig) -> tuple[ImageSet, ImageSet]:
    """CIFAR-100 with its 20 coarse superclasses as labels (read from the dataset's own files)."""
    from torchvision.datasets import CIFAR100

    out = []
    for train in (True, False):
        d = _torchvision(CIFAR100, config, train=train)
        with open(Path(d.root) / d.base_folder / ("train" if train else "test"), "rb") as f:
            coarse = pickle.load(f, encoding="latin1")["coarse_labels"]
        with open(Path(d.root) / d.base_folder / "meta", "rb") as f:
            names = pickle.load(f, encoding="latin1")["coarse_label_names"]
        out.append(ImageSet(images_from_array(d.data, "CIFAR-100"), torch.tensor(coarse, dtype=torch.long), names))
    return tuple(out)  # type: ignore[return-value]


def stl10(config: ClusterConfig, unlabelled: bool = True) -> tuple[ImageSet, ImageSet, ImageSet | None]:
    """STL-10's train and test splits and (with ``unlabelled``) its 100k unlabelled images."""
    from torchvision.datasets import STL10

    out: list[ImageSet | None] = []
    for split in ("train", "test", "unlabeled") if unlabelled else ("train", "test"):
        d = _torchvision(STL10, config, split=split)
        labels = None if split == "unlabeled" else torch.from_numpy(d.labels.astype(np.int64))
        out.append(ImageSet(images_from_array(d.data, "STL-10", channels_last=False), labels, list(d.classes)))
    return tuple(out + [None] * (3 - len(out)))  # type: ignore[return-value]


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """The x/y arrays of an .npz file and the names of all its arrays, or one clear error if it is not a
    readable .npz."""
    with open_npz(path) as npz:
        return {key: npz[key] for key in NPZ_KEYS if key in npz.files}, sorted(npz.files)


def npz_arrays(path: Path) -> tuple[ImageSet, ImageSet | None]:
    """``x_train``/``y_train`` (and optionally ``x_test``/``y_test``) arrays, like ../shared/datasets/mnist.npz.

    Labels may be any whole numbers: they become class ids 0…C−1 (the same for both splits).
    """
    if path.is_dir():
        raise IICError(f"{path} is a directory: give an .npz file (a folder of images is --dataset folder)")
    if not path.is_file():
        raise IICError(f"no such file: {path}")
    arrays, keys = read_npz(path)
    if "x_train" not in arrays:
        raise IICError(f"{path} has no 'x_train' array (found: {', '.join(keys) or 'none'})")
    splits, labelled = npz_splits(arrays, path, "images")
    images = [images_from_array(arrays[f"x_{split}"], f"{path.name}:x_{split}") for split in splits]
    if labelled:
        raw = [labels_from_array(arrays[f"y_{split}"], len(x), f"{path.name}:y_{split}")
               for split, x in zip(splits, images)]
        labels, names = consecutive_labels(*raw)
        sets = [ImageSet(x, y, names) for x, y in zip(images, labels)]
    else:
        sets = [ImageSet(x, None) for x in images]
    return sets[0], sets[1] if len(sets) > 1 else None


def image_folder(path: Path, channels: int, size: int) -> ImageSet:
    """A folder of class sub-folders (labels used only for evaluation; each with its own sub-folders), or a flat
    folder with no labels. A zip's __MACOSX folder is not a class."""
    if not path.exists():
        raise IICError(f"no such directory: {path}")
    if not path.is_dir():
        raise IICError(f"not a directory: {path}")
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX")
    flat_files = [p for p in path.iterdir() if p.is_file() and is_image_file(p)]
    if class_dirs and flat_files:  # which layout was meant is a guess either way
        raise IICError(f"{path} holds both images ({flat_files[0].name}, …: {len(flat_files)}) and sub-folders "
                       f"({class_dirs[0].name}, …: {len(class_dirs)}): give one class sub-folder per class, "
                       f"or only images (no labels)")
    if class_dirs:
        files, labels = [], []
        for index, class_dir in enumerate(class_dirs):
            class_files = list_image_files(class_dir, recursive=True)  # as torchvision's ImageFolder
            files += class_files
            labels += [index] * len(class_files)
        names: list[str] | None = [d.name for d in class_dirs]
        label_tensor: torch.Tensor | None = torch.tensor(labels)
    else:
        files, names, label_tensor = list_image_files(path), None, None
    images = np.stack([load_image(f, channels, (size, size)) for f in files])
    return ImageSet(images_from_array(images, str(path)), label_tensor, names)


# --- assembling a run's data -----------------------------------------------------------------------

@dataclass
class Splits:
    """A dataset's splits as read, sized and coloured for a run: train, test (None if it has none), and images only
    head A trains on (STL-10's unlabelled ones)."""

    train: ImageSet
    test: ImageSet | None
    extra_a: ImageSet | None
    channels: int


def load_splits(config: ClusterConfig, unlabelled: bool = True) -> Splits:
    """The splits of ``config.dataset``, at its image size and channels; without ``unlabelled``, not the images only
    head A trains on (STL-10's 100k, which labelled uses of the splits would read and discard)."""
    if config.data_path:  # "~/data" from Python; a shell expands it on the command line
        config = dataclasses.replace(config, data_path=os.path.expanduser(config.data_path))
    extra_a: ImageSet | None = None
    channels = config.channels
    name = config.dataset
    if name == "digits":
        train, test = digits()
        channels = 1
    elif name == "mnist":
        if config.data_path and Path(config.data_path).suffix == ".npz":
            train, test = npz_arrays(Path(config.data_path))
        else:
            train, test = mnist(config)
        channels = 1
    elif name == "cifar10":
        train, test = cifar10(config)
        channels = 3
    elif name == "cifar100-20":
        train, test = cifar100_20(config)
        channels = 3
    elif name == "stl10":
        train, test, extra_a = stl10(config, unlabelled)
        channels = 3
    elif name == "npz":
        if not config.data_path:
            raise IICError("dataset 'npz' needs --data-path FILE.npz")
        train, test = npz_arrays(Path(config.data_path))
    elif name == "folder":
        if not config.data_path:
            raise IICError("dataset 'folder' needs --data-path DIR")
        train, test = image_folder(Path(config.data_path), config.channels, config.image_size), None
    else:
        raise IICError(f"unknown dataset {name!r}: use digits, mnist, cifar10, cifar100-20, stl10, npz or folder")

    def prepare(s: ImageSet | None) -> ImageSet | None:
        if s is None:
            return None
        return ImageSet(resize_images(match_channels(s.images, channels), config.image_size), s.labels, s.class_names)

    return Splits(prepare(train), prepare(test), prepare(extra_a), channels)


def load_cluster_data(config: ClusterConfig, training: bool = True) -> ClusterData:
    """The sets heads A and B train on and the set evaluated, per the dataset and protocol (``training``: also
    check that each head has at least as many images as clusters)."""
    if config.protocol not in ("iic", "split"):
        raise IICError(f"unknown protocol {config.protocol!r}: use 'iic' (train+test) or 'split'")
    splits = load_splits(config)
    train, test, extra_a = splits.train, splits.test, splits.extra_a
    train_b, evaluation = protocol_sets(config.protocol, config.dataset, train, test, concat)
    train_a = concat(train_b, extra_a) if extra_a is not None else train_b
    for k, head in ((config.k_b, "k_b"), (config.k_a, "k_a")):
        if training and k > len(train_b):
            raise IICError(f"{head}={k} is larger than the number of training images ({len(train_b)})")
    if config.k_b < 1:
        raise IICError(f"k_b must be at least 1, got {config.k_b}")
    return ClusterData(train_a, train_b, evaluation, splits.channels)
