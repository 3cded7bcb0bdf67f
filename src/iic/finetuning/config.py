"""The fine-tuning run configuration (the paper's semi-supervised use of an IIC-trained trunk) and its presets."""

from dataclasses import dataclass
from typing import Any, ClassVar

from iic.config import engine_checks
from iic.errors import IICError


@dataclass
class FinetuneConfig:
    """A classifier trained with few labels on the trunk of an IIC clustering run. The network, image sizes and the
    data default to the IIC run's; only the labelled subset and the supervised training are set here."""

    TASK: ClassVar[str] = "finetuning"
    RENAMED: ClassVar[dict[str, str]] = {}

    preset: str = "default"  # the named settings the others start from (default: the IIC run's preset if one is here)
    source: str | None = None  # the IIC clustering run (its directory, or a checkpoint) whose trunk is fine-tuned
    # data: the IIC run's dataset unless given; labelled images from its training split, scored on its test split
    dataset: str | None = None  # another dataset than the IIC run's (its images are sized as the run's)
    data_path: str | None = None  # for dataset (default: the IIC run's)
    download: bool = False  # fetch a torchvision dataset into data_path when it is not there
    labels: float = 100  # labelled training images: a count, or a fraction below 1 (all: the training split's size)
    labels_seed: int = 0  # seeds the draw of the labelled images (saved in the run as labelled.csv)
    stratified: bool = True  # each class gets its share of the labels (at least one); else a uniform draw
    validation: float = 0.0  # fraction of the labelled images held out to choose the best pass (0: the last pass)
    # network: the IIC run's input layer and trunk, then a new head
    from_scratch: bool = False  # the same network from random weights (the baseline): the IIC run gives its shape only
    freeze_trunk: bool = False  # train the head alone on the frozen trunk (with head_width 0: a linear probe)
    head_width: int = 2048  # hidden units of the head: Linear → BatchNorm → ReLU → Linear (the paper's); 0: one Linear
    # augmentation of each labelled image
    dataset_views: bool = True  # the IIC run's g: its random crop, flip, rotation and colour jitter
    affine_p: float = 0.5  # probability of a random affine warp (rotation, shift, scale, shear), as the paper
    cutout_p: float = 0.5  # probability of cutting out a random rectangle, as the paper
    ten_crop: bool = False  # evaluate on ten crops (corners, centre, and flipped) of eval_crop_size, logits averaged
    # optimisation
    lr: float = 1e-3  # Adam's learning rate of the head
    trunk_lr: float = 1e-4  # Adam's learning rate of the trunk
    lr_schedule: str = "constant"  # constant | cosine: from the lrs down to 0 over all of the run's steps
    batch_size: int = 100  # labelled images per step (per process under DDP)
    epochs: int = 20  # passes; each draws epoch_images labelled images
    epoch_images: int = 0  # labelled images per pass, the labelled set repeated in new orders (0: the set, once)
    seed: int = 0  # seeds the head (all weights with from_scratch), augmentations and data order
    max_minutes: float = 0.0  # stop training after this much wall-clock time (0: no limit)
    # engine
    accelerator: str = "auto"  # auto | cpu | gpu (Lightning's names)
    devices: str = "auto"  # "auto", a count, or a comma-separated list of device ids (per node)
    num_nodes: int = 1  # machines (nodes) of a multi-node run; devices on each
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed (GPU only)
    num_workers: int = 0  # DataLoader worker processes
    eval_every: int = 1  # score the validation part every N passes (with validation > 0)
    out_dir: str = "runs"  # run directories are made here
    name: str | None = None  # run directory name (default: finetune-, the preset and time)


# The paper's recipe (its supplementary material: STL-10, 5,000 labels), and CPU-sized ones for MNIST and CIFAR-10.
# MNIST's augmentation is the affine warp alone: the IIC run's crops and rotations on top of it, and cutouts (which
# erase strokes), lost 2 points with 100 labels, chosen on training images held out (BENCHMARKS.md), not on test ones.
FINETUNE_PRESETS: dict[str, dict[str, Any]] = {
    "default": dict(epochs=20, epoch_images=2000),
    "mnist": dict(epochs=30, epoch_images=6000, lr_schedule="cosine", dataset_views=False, cutout_p=0.0),
    # A CPU-sized IIC run on CIFAR-10 (minutes, not the paper's hours) leaves its trunk little to preserve: the trunk
    # trains at the head's lr (chosen on held-out training images, BENCHMARKS.md).
    "cifar10": dict(epochs=30, epoch_images=4000, lr_schedule="cosine", trunk_lr=1e-3),
    "stl10": dict(labels=5000, batch_size=700, epochs=8000, epoch_images=0, head_width=2048, ten_crop=True),
}


def validate_finetune_config(config: FinetuneConfig) -> None:
    """One clear error for the first setting out of range."""
    checks = engine_checks(config) + [
        (config.source is not None, "fine-tuning needs an IIC run: give its directory or checkpoint"),
        (0 < config.trunk_lr <= 10, f"trunk_lr must be positive and at most 10, got {config.trunk_lr}"),
        (config.batch_size >= 2, f"batch_size must be at least 2, got {config.batch_size}"),
        (config.head_width >= 0, f"head_width must be 0 (a linear head) or positive, got {config.head_width}"),
        (0 <= config.validation < 1, f"validation must be a fraction in [0, 1), got {config.validation}"),
        (0 <= config.affine_p <= 1, f"affine_p must be a probability (0 to 1), got {config.affine_p}"),
        (0 <= config.cutout_p <= 1, f"cutout_p must be a probability (0 to 1), got {config.cutout_p}"),
        (config.epoch_images >= 0, f"epoch_images must be 0 (one pass over the labels) or more, "
                                   f"got {config.epoch_images}"),
        (not (config.from_scratch and config.freeze_trunk),
         "from_scratch and freeze_trunk together would train a head on random features: choose one"),
    ]
    for ok, message in checks:
        if not ok:
            raise IICError(message)
