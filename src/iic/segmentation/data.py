"""Segmentation datasets, each read from its real on-disk format, as images with optional label maps.

A source yields ``(image, label)`` pairs: ``image`` uint8 H × W × C (colour channels first, then extra
channels such as Potsdam's infrared), ``label`` int64 H × W with class ids 0…C−1 and ``IGNORE`` (−1) for
pixels that are masked out (unlabelled, "thing", void), or None when the image has no label map.

* Potsdam: the IIC authors' preprocessed 200×200 tiles, ``imgs/<id>.mat`` (key ``img``, uint8 RGB+IR) and
  ``gt/<id>.mat`` (key ``gt``, int32 0…5), listed by ``<split>.txt`` in the root; Potsdam-3 merges the six
  classes into roads+cars, buildings+clutter, vegetation+trees.
* COCO-Stuff (164k): ``images/<split>/<id>.jpg`` and ``annotations/<split>/<id>.png`` (fine ids 0…181,
  255 unlabelled), with the curated image list ``curated/<split>/<name>_<version>.txt``; without that list
  the curation rule is applied to the annotations (≥ 75 % of pixels in the classes of interest, both sides
  ≥ 360 px). Fine ids map to the 27 coarse classes; "thing" classes are masked out.
* A folder of images with optional label-map PNGs (same file stem) and an ignore value.
* ``.npz`` arrays ``x_<split>`` (N × H × W × 3 uint8) and ``y_<split>`` (N × H × W), optionally with
  ``class_names``, ``void_label`` and ``names_<split>`` (N file names; an item is named by its name's stem).
* A synthetic demo generated in code: regions that differ only in texture.
"""

import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
import torch
import torch.nn.functional as F

from iic.data.images import is_image_file, list_image_files, load_image, load_label_map
from iic.data.npz import open_npz
from iic.distributed import evaluation_sampler
from iic.errors import IICError
from iic.segmentation.config import MIN_INPUT_SIDE, SegmentConfig, scaled_side

IGNORE = -1

POTSDAM_CLASSES = ["roads", "buildings", "low vegetation", "trees", "cars", "clutter"]
POTSDAM3_CLASSES = ["roads and cars", "buildings and clutter", "vegetation and trees"]
POTSDAM_FINE_TO_COARSE = np.array([0, 1, 2, 2, 0, 1])  # see the authors' potsdam_prepare.py

# COCO-Stuff's 27 coarse classes: 12 "things" (0–11) then 15 "stuff" (12–26).
COCO_COARSE_NAMES = [
    "electronic", "appliance", "food", "furniture", "indoor", "kitchen", "accessory", "animal", "outdoor",
    "person", "sports", "vehicle",
    "ceiling", "floor", "food-stuff", "furniture-stuff", "rawmaterial", "textile", "wall", "window",
    "building", "ground", "plant", "sky", "solid", "structural", "water",
]
FIRST_STUFF = 12
# Coarse class of each of the 182 fine COCO-Stuff ids (COCO-Stuff's label hierarchy).
COCO_FINE_TO_COARSE = np.array([
    9, 11, 11, 11, 11, 11, 11, 11, 11, 8, 8, 8, 8, 8, 8, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6, 6,
    6, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 5, 5, 5, 5, 5, 5, 5, 5, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3,
    3, 3, 3, 3, 3, 3, 3, 3, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 4, 4, 4, 4, 4, 4, 4, 4, 17, 17, 22, 20, 20,
    22, 15, 25, 16, 13, 12, 12, 17, 17, 23, 15, 15, 17, 15, 21, 15, 25, 13, 13, 13, 13, 13, 22, 26, 14, 14,
    15, 22, 21, 21, 24, 20, 22, 15, 17, 16, 15, 22, 24, 21, 17, 25, 16, 21, 17, 22, 16, 21, 21, 25, 21, 26,
    21, 24, 20, 17, 14, 21, 26, 15, 23, 20, 21, 24, 15, 24, 22, 25, 15, 20, 17, 17, 22, 14, 18, 18, 18, 18,
    18, 18, 18, 26, 26, 19, 19, 24,
])
COCO3_COARSE = [23, 22, 21]  # sky, plant, ground (the authors' order)
COCO3_CLASSES = ["sky", "plant", "ground"]
COCO15_CLASSES = [COCO_COARSE_NAMES[c].removesuffix("-stuff") for c in range(FIRST_STUFF, 27)]
COCO_CURATED_NAMES = {3: "Coco164kFew_Stuff", 15: "Coco164kFull_Stuff_Coarse"}
COCO_CURATION_FRACTION = 0.75
COCO_CURATION_MIN_SIDE = 360


def cocostuff_fine_to_target(num_classes: int) -> np.ndarray:
    """Lookup table (256 entries) from a fine COCO-Stuff id (255 = unlabelled) to 0…num_classes−1 or IGNORE."""
    table = np.full(256, IGNORE, dtype=np.int64)
    for fine, coarse in enumerate(COCO_FINE_TO_COARSE):
        if num_classes == 3 and coarse in COCO3_COARSE:
            table[fine] = COCO3_COARSE.index(coarse)
        elif num_classes == 15 and coarse >= FIRST_STUFF:
            table[fine] = coarse - FIRST_STUFF
    return table


class SegmentationSource:
    """Indexable images with optional label maps (see the module docstring for the conventions)."""

    name: str = "images"
    class_names: list[str]
    color_channels: int = 3
    extra_channels: int = 0

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def item_name(self, index: int) -> str:
        return f"{index:05d}"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_labels(self) -> bool:
        return bool(self.class_names)


@dataclass
class ArraySource(SegmentationSource):
    images: np.ndarray  # N × H × W × C uint8
    labels: np.ndarray | None  # N × H × W int, IGNORE for masked pixels
    class_names: list[str] = field(default_factory=list)
    names: list[str] | None = None
    name: str = "arrays"
    color_channels: int = 3
    extra_channels: int = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        label = None if self.labels is None else self.labels[index].astype(np.int64)
        return self.images[index], label

    def item_name(self, index: int) -> str:
        return self.names[index] if self.names is not None else f"{index:05d}"


def _read_id_list(path: Path) -> list[str]:
    if not path.is_file():
        raise IICError(f"missing image list {path}")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise IICError(f"image list {path} is empty")
    return ids


def _load_mat(path: Path, key: str) -> np.ndarray:
    try:
        return scipy.io.loadmat(path)[key]
    except FileNotFoundError:
        raise IICError(f"missing file {path}") from None
    except KeyError:
        raise IICError(f"{path} has no variable {key!r}") from None
    except (ValueError, TypeError, OSError) as exc:
        raise IICError(f"cannot read {path}: not a MATLAB .mat file ({exc.__class__.__name__})") from None


class PotsdamSource(SegmentationSource):
    """The authors' preprocessed Potsdam tiles (RGB + IR), 6 classes or the 3-class merge."""

    color_channels = 3
    extra_channels = 1

    def __init__(self, root: str | Path, splits: tuple[str, ...], coarse: bool, require_labels: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise IICError(f"Potsdam root {self.root} is not a directory")
        self.name = "potsdam3" if coarse else "potsdam"
        self.coarse = coarse
        self.class_names = list(POTSDAM3_CLASSES if coarse else POTSDAM_CLASSES)
        self.ids = [image_id for split in splits for image_id in _read_id_list(self.root / f"{split}.txt")]
        missing = [i for i in self.ids if not (self.root / "imgs" / f"{i}.mat").is_file()]
        if missing:
            raise IICError(f"Potsdam tile {self.root / 'imgs' / (missing[0] + '.mat')} listed but missing "
                           f"({len(missing)} missing)")
        if require_labels:
            unlabelled = [i for i in self.ids if not (self.root / "gt" / f"{i}.mat").is_file()]
            if unlabelled:
                raise IICError(f"Potsdam tile {unlabelled[0]} has no label map "
                               f"{self.root / 'gt' / (unlabelled[0] + '.mat')}")

    def __len__(self) -> int:
        return len(self.ids)

    def item_name(self, index: int) -> str:
        return self.ids[index]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        image_id = self.ids[index]
        image = _load_mat(self.root / "imgs" / f"{image_id}.mat", "img")
        if image.ndim != 3 or image.shape[2] != 4:
            raise IICError(f"Potsdam tile {image_id}: expected an H×W×4 (RGB+IR) image, got shape {image.shape}")
        label_path = self.root / "gt" / f"{image_id}.mat"
        if not label_path.is_file():
            return image.astype(np.uint8), None
        label = _load_mat(label_path, "gt").astype(np.int64)
        if label.shape != image.shape[:2]:
            raise IICError(f"Potsdam tile {image_id}: label map is {label.shape[0]}×{label.shape[1]} "
                           f"but the image is {image.shape[0]}×{image.shape[1]}")
        if label.min(initial=0) < 0 or label.max(initial=0) > 5:
            raise IICError(f"Potsdam tile {image_id}: label ids must be 0…5")
        if self.coarse:
            label = POTSDAM_FINE_TO_COARSE[label]
        return image.astype(np.uint8), label


def meets_curation_rule(fine_label: np.ndarray, wanted: np.ndarray, fraction: float = COCO_CURATION_FRACTION,
                        min_side: int = COCO_CURATION_MIN_SIDE) -> bool:
    """COCO-Stuff curation: both sides ≥ min_side and ≥ fraction of pixels in the classes of interest."""
    h, w = fine_label.shape
    if h < min_side or w < min_side:
        return False
    return np.isin(fine_label, wanted).sum() >= fraction * h * w


class CocoStuffSource(SegmentationSource):
    """COCO-Stuff 164k, curated: COCO-Stuff-3 (sky, plant, ground) or COCO-Stuff (15 stuff classes)."""

    def __init__(self, root: str | Path, splits: tuple[str, ...], num_classes: int, curated_version: int):
        if num_classes not in COCO_CURATED_NAMES:
            raise IICError(f"COCO-Stuff has 3- and 15-class versions, not {num_classes}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise IICError(f"COCO-Stuff root {self.root} is not a directory")
        self.name = f"cocostuff{num_classes}"
        self.class_names = list(COCO3_CLASSES if num_classes == 3 else COCO15_CLASSES)
        self.table = cocostuff_fine_to_target(num_classes)
        self.items: list[tuple[str, str]] = []
        for split in splits:
            list_path = self.root / "curated" / split / f"{COCO_CURATED_NAMES[num_classes]}_{curated_version}.txt"
            ids = _read_id_list(list_path) if list_path.is_file() else self.curate(split)
            self.items += [(split, image_id) for image_id in ids]
        first_split, first_id = self.items[0]
        for path in (self.image_path(first_split, first_id), self.label_path(first_split, first_id)):
            if not path.is_file():
                raise IICError(f"COCO-Stuff image {first_id} listed but {path} is missing")

    def image_path(self, split: str, image_id: str) -> Path:
        return self.root / "images" / split / f"{image_id}.jpg"

    def label_path(self, split: str, image_id: str) -> Path:
        return self.root / "annotations" / split / f"{image_id}.png"

    def curate(self, split: str) -> list[str]:
        """Apply the curation rule to every annotation of ``split`` (used when no curated list exists)."""
        folder = self.root / "annotations" / split
        if not folder.is_dir():
            raise IICError(f"COCO-Stuff: neither a curated list nor an annotation folder {folder}")
        wanted = np.flatnonzero(self.table[:182] != IGNORE)
        ids = [p.stem for p in sorted(folder.glob("*.png")) if meets_curation_rule(load_label_map(p), wanted)]
        if not ids:
            raise IICError(f"COCO-Stuff: no image in {folder} meets the curation rule")
        return ids

    def __len__(self) -> int:
        return len(self.items)

    def item_name(self, index: int) -> str:
        return self.items[index][1]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        split, image_id = self.items[index]
        image = load_image(self.image_path(split, image_id), channels=3, upright=False)
        fine = load_label_map(self.label_path(split, image_id))
        if fine.shape != image.shape[:2]:
            raise IICError(f"COCO-Stuff {image_id}: label map is {fine.shape[0]}×{fine.shape[1]} "
                           f"but the image is {image.shape[0]}×{image.shape[1]}")
        return image, self.table[fine]


class FolderSource(SegmentationSource):
    """Images in a folder; label-map PNGs with the same stem in ``label_dir`` (required when given)."""

    def __init__(self, image_dir: str | Path, label_dir: str | Path | None = None, ignore_index: int | None = None,
                 num_classes: int | None = None, class_names: list[str] | None = None):
        self.name = Path(image_dir).name or "images"
        self.files = list_image_files(image_dir)
        self.ignore_index = ignore_index
        self.label_files: list[Path] | None = None
        self.class_names = list(class_names or [])
        # Every file is read now, by the rules training reads it with: a bad one fails before the run starts,
        # not in the middle of training (or never, when a short epoch does not draw it).
        image_shapes = [load_image(image_file, channels=3, upright=False).shape[:2] for image_file in self.files]
        if label_dir is None:
            return
        label_dir = Path(label_dir)
        if not label_dir.is_dir():
            raise IICError(f"label folder {label_dir} is not a directory")
        by_stem = {p.stem: p for p in label_dir.iterdir() if p.is_file() and is_image_file(p)}
        self.label_files = []
        highest = IGNORE
        for image_file, image_shape in zip(self.files, image_shapes):
            label_file = by_stem.get(image_file.stem)
            if label_file is None:
                raise IICError(f"image {image_file} has no label map in {label_dir} (expected {image_file.stem}.png)")
            label = self._read_label(label_file)
            if label.shape != image_shape:
                raise IICError(f"label map {label_file} is {label.shape[1]}×{label.shape[0]} (w×h) "
                               f"but its image {image_file} is {image_shape[1]}×{image_shape[0]}")
            highest = max(highest, int(label.max(initial=IGNORE)))
            self.label_files.append(label_file)
        if not self.class_names:
            if num_classes is None:
                if highest < 0:
                    raise IICError("the label maps contain no labelled pixel")
                num_classes = highest + 1
            self.class_names = [f"class {c}" for c in range(num_classes)]

    def _read_label(self, path: Path) -> np.ndarray:
        label = load_label_map(path).astype(np.int64)
        if self.ignore_index is not None:
            label[label == self.ignore_index] = IGNORE
        return label

    def __len__(self) -> int:
        return len(self.files)

    def item_name(self, index: int) -> str:
        return self.files[index].stem

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        image = load_image(self.files[index], channels=3, upright=False)
        if self.label_files is None:
            return image, None
        label = self._read_label(self.label_files[index])
        if label.max(initial=IGNORE) >= self.num_classes:
            raise IICError(f"label map {self.label_files[index]} has class id {label.max()} "
                           f"but there are {self.num_classes} classes (set --ignore-index for a void value)")
        return image, label


def parse_class_groups(spec: str) -> list[list[int]]:
    """``"0;3,4;5"`` → [[0], [3, 4], [5]]: new class i merges the listed original ids; others are masked."""
    try:
        groups = [[int(v) for v in part.split(",") if v.strip()] for part in spec.split(";")]
    except ValueError:
        raise IICError(f"class groups {spec!r}: expected ids like '0;3,4;5'") from None
    if not groups or any(not g for g in groups):
        raise IICError(f"class groups {spec!r}: every group needs at least one class id")
    if any(not 0 <= v <= 255 for g in groups for v in g):  # label maps hold ids 0…255
        raise IICError(f"class groups {spec!r}: class ids must be 0…255")
    return groups


def _npz_item_names(path: Path, archive, split: str, count: int) -> list[str]:
    """The item names of ``split`` from ``names_<split>``: one file name per image, the extension dropped."""
    names = archive[f"names_{split}"]
    if names.ndim != 1 or len(names) != count or names.dtype.kind not in "US":
        raise IICError(f"{path}: names_{split} must be a 1-D array of {count} strings (one per image of x_{split}), "
                       f"got {names.dtype} {names.shape}")
    if names.dtype.kind == "S":
        try:
            names = [bytes(n).decode("utf-8") for n in names]
        except UnicodeDecodeError:
            raise IICError(f"{path}: names_{split} holds bytes that are not UTF-8 text") from None
    return [Path(str(n)).stem for n in names]


def _read_npz_splits(path: Path, archive, splits: tuple[str, ...], ignore_index: int | None):
    """The images, label maps (None where a split has none) and item names of ``splits``, the class names and the
    void label of an open .npz archive; every check that needs only the arrays themselves."""
    if ignore_index is None and "void_label" in archive:
        void = archive["void_label"]
        if void.shape != () or not np.issubdtype(void.dtype, np.integer):
            raise IICError(f"{path}: void_label must be one integer, got {void.dtype} {void.shape}")
        ignore_index = int(void)
    images, labels, names = [], [], []
    for split in splits:
        if f"x_{split}" not in archive:
            raise IICError(f"{path} has no array x_{split} (has: {', '.join(sorted(archive.files))})")
        x = archive[f"x_{split}"]
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
            raise IICError(f"{path}: x_{split} must be N×H×W×3 uint8, got {x.dtype} {x.shape}")
        if 0 in x.shape:
            raise IICError(f"{path}: x_{split} holds no images, or images with no pixels (shape {x.shape})")
        images.append(x)
        y = archive[f"y_{split}"] if f"y_{split}" in archive else None
        if y is not None and y.shape != x.shape[:3]:
            raise IICError(f"{path}: label maps y_{split} are {y.shape} but images x_{split} are {x.shape[:3]}")
        if y is not None and not np.issubdtype(y.dtype, np.integer):
            raise IICError(f"{path}: label maps y_{split} must hold integer class ids, got dtype {y.dtype}")
        if y is not None and (((y < 0) | (y > 255)) & (y != IGNORE) & (y != (ignore_index or 0))).any():
            raise IICError(f"{path}: label maps y_{split} must hold class ids 0…255 (or {IGNORE} or the void label), "
                           f"got values in [{y.min()}, {y.max()}]")
        labels.append(y)
        names += (_npz_item_names(path, archive, split, len(x)) if f"names_{split}" in archive
                  else [f"{split}_{i:04d}" for i in range(len(x))])
    class_names = [str(n) for n in archive["class_names"]] if "class_names" in archive else None
    return images, labels, names, class_names, ignore_index


def load_npz_source(path: str | Path, splits: tuple[str, ...], ignore_index: int | None = None,
                    class_groups: str | None = None) -> ArraySource:
    """Images ``x_<split>`` and labels ``y_<split>`` of an .npz file, splits concatenated."""
    path = Path(path)
    if not path.is_file():
        raise IICError(f"no such .npz file: {path}")
    with open_npz(path) as archive:
        images, labels, names, class_names, ignore_index = _read_npz_splits(path, archive, splits, ignore_index)
    if len({x.shape[1:] for x in images}) > 1:
        raise IICError(f"{path}: the splits {', '.join(splits)} have different image sizes")
    image_array = np.concatenate(images)
    label_array = None
    if all(y is not None for y in labels):
        label_array = np.concatenate(labels).astype(np.int16)
        if ignore_index is not None:
            label_array[label_array == ignore_index] = IGNORE
            if class_names is not None and 0 <= ignore_index < len(class_names):
                class_names = [n for i, n in enumerate(class_names) if i != ignore_index]
        if class_groups:
            groups = parse_class_groups(class_groups)
            table = np.full(256, IGNORE, dtype=np.int16)
            for new_id, group in enumerate(groups):
                table[group] = new_id
            merged = np.where(label_array >= 0, table[np.clip(label_array, 0, 255)], IGNORE)
            original = class_names or [str(i) for i in range(int(label_array.max()) + 1)]
            class_names = ["+".join(original[i] if i < len(original) else str(i) for i in g) for g in groups]
            label_array = merged.astype(np.int16)
        if class_names is None:
            class_names = [f"class {c}" for c in range(int(label_array.max()) + 1)]
    return ArraySource(image_array, label_array, class_names or [], names, name=path.stem)


def demo_source(num_images: int = 48, size: int = 64, seed: int = 0) -> ArraySource:
    """Synthetic scenes of three regions that differ only in texture (flat, stripes, grain), same mean colour.

    Region boundaries are a random warped partition; each image has its own colour and brightness, so
    only texture separates the classes. Generated in code: no download.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.zeros((num_images, size, size, 3), dtype=np.uint8)
    labels = np.zeros((num_images, size, size), dtype=np.int16)
    for n in range(num_images):
        centres = rng.uniform(0, size, size=(3, 2))
        wobble = 6 * np.sin(yy / rng.uniform(6, 12) + rng.uniform(0, 6)) + 6 * np.cos(xx / rng.uniform(6, 12))
        distances = np.stack([np.hypot(yy + wobble - cy, xx - wobble - cx) for cy, cx in centres])
        label = distances.argmin(axis=0)
        angle = rng.uniform(0, np.pi)
        along = np.cos(angle) * xx + np.sin(angle) * yy
        textures = np.stack([
            np.zeros_like(xx),  # flat
            np.sign(np.sin(2 * np.pi * along / 8.0)),  # stripes, random orientation
            rng.choice([-1.0, 1.0], size=xx.shape),  # grain: independent pixels
        ])
        texture = np.take_along_axis(textures, label[None], axis=0)[0]
        colour = rng.uniform(0.3, 0.7, size=3)
        amplitude = rng.uniform(0.15, 0.25)
        pixels = colour[None, None] + amplitude * texture[..., None] + rng.normal(0, 0.03, size=(size, size, 3))
        images[n] = np.clip(pixels * 255, 0, 255).astype(np.uint8)
        labels[n] = label
    return ArraySource(images, labels, ["flat", "stripes", "grain"], [f"demo_{i:03d}" for i in range(num_images)],
                       name="demo")


def to_tensor(image: np.ndarray, label: np.ndarray | None, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """C × H × W float image in [0, 1] and H × W int64 label (all IGNORE when unknown), rescaled by ``scale``."""
    pixels = np.ascontiguousarray(image)
    if not pixels.flags.writeable:  # arrays read through PIL are read-only, and torch only wraps writable memory
        pixels = pixels.copy()
    x = torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255)
    y = (torch.full(image.shape[:2], IGNORE, dtype=torch.long) if label is None
         else torch.from_numpy(np.asarray(label, dtype=np.int64)))
    if scale != 1.0:
        h, w = scaled_side(image.shape[0], scale), scaled_side(image.shape[1], scale)
        x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False,
                          antialias=scale < 1)[0].clamp_(0, 1)
        y = F.interpolate(y[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
    return x, y


def crop_or_pad(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, size: int, top: int, left: int):
    """Crop size × size at (top, left), zero-padding (and marking invalid) wherever the image is smaller."""
    _, h, w = x.shape
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
        y = F.pad(y, (0, pad_w, 0, pad_h), value=IGNORE)
        valid = F.pad(valid, (0, pad_w, 0, pad_h), value=False)
    return (x[:, top:top + size, left:left + size], y[top:top + size, left:left + size],
            valid[top:top + size, left:left + size])


MAX_CROP_SCALE = 4.0


def check_crop_scales(crop_scales) -> None:
    """One clear error unless ``crop_scales`` is two finite numbers lo, hi with 0 < lo ≤ hi ≤ MAX_CROP_SCALE."""
    try:
        if isinstance(crop_scales, (str, bytes)):
            raise TypeError
        lo, hi = (float(v) for v in crop_scales)
    except (TypeError, ValueError):
        raise IICError(f"crop_scales must be two numbers lo, hi (0 < lo ≤ hi ≤ {MAX_CROP_SCALE:g}), "
                       f"got {crop_scales!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi <= MAX_CROP_SCALE):
        raise IICError(f"crop_scales must be two numbers lo, hi with 0 < lo ≤ hi ≤ {MAX_CROP_SCALE:g}, "
                       f"got {lo:g}, {hi:g}")


class TrainingCrops(torch.utils.data.Dataset):
    """Random crops for training: (image C×s×s, mask s×s of pixels that count in the loss).

    With ``crop_scales`` (lo, hi) ≠ (1, 1) a crop cuts a square of side round(crop_size × s) pixels of the scaled
    image (s uniform in [lo, hi]) at a random position and resizes it to crop_size × crop_size: bilinear with
    antialiasing for the image, nearest for the mask. Beyond the image, zero padding marked invalid as at s = 1.
    """

    def __init__(self, source: SegmentationSource, crop_size: int, scale: float = 1.0, mask_unlabelled: bool = False,
                 crop_scales: tuple[float, float] = (1.0, 1.0)):
        self.source, self.crop_size, self.scale, self.mask_unlabelled = source, crop_size, scale, mask_unlabelled
        check_crop_scales(crop_scales)
        self.crop_scales = (float(crop_scales[0]), float(crop_scales[1]))

    def __len__(self) -> int:
        return len(self.source)

    def region_side(self) -> int:
        """The side of the region a crop cuts: crop_size at (1, 1), without drawing a random number then."""
        lo, hi = self.crop_scales
        s = lo if lo == hi else lo + (hi - lo) * float(torch.rand(()))
        return self.crop_size if s == 1.0 else max(1, round(self.crop_size * s))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.source[index]
        x, y = to_tensor(image, label, self.scale)
        valid = (y >= 0) if (self.mask_unlabelled and label is not None) else torch.ones_like(y, dtype=torch.bool)
        _, h, w = x.shape
        side = self.region_side()
        top = int(torch.randint(0, max(1, h - side + 1), ()))
        left = int(torch.randint(0, max(1, w - side + 1), ()))
        x, _, valid = crop_or_pad(x, y, valid, side, top, left)
        if side != self.crop_size:
            size = (self.crop_size, self.crop_size)
            x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0].clamp_(0, 1)
            valid = F.interpolate(valid[None, None].float(), size=size, mode="nearest")[0, 0] > 0.5
        return x, valid


class EvaluationImages(torch.utils.data.Dataset):
    """Whole images (or their centre crop) with labels for evaluation: (image, label, index)."""

    def __init__(self, source: SegmentationSource, scale: float = 1.0, crop_size: int | None = None):
        self.source, self.scale, self.crop_size = source, scale, crop_size

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image, label = self.source[index]
        x, y = to_tensor(image, label, self.scale)
        if self.crop_size:
            _, h, w = x.shape
            top, left = max(0, (h - self.crop_size) // 2), max(0, (w - self.crop_size) // 2)
            x, y, _ = crop_or_pad(x, y, torch.ones_like(y, dtype=torch.bool), self.crop_size, top, left)
        return x, y, index


class SubsetSource(SegmentationSource):
    """The items ``indices`` (in that order) of ``source``; everything else is the source's."""

    def __init__(self, source: SegmentationSource, indices: list[int]):
        self.source, self.indices = source, [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.source[self.indices[index]]

    def item_name(self, index: int) -> str:
        return self.source.item_name(self.indices[index])

    @property
    def class_names(self) -> list[str]:
        return self.source.class_names

    @class_names.setter
    def class_names(self, names: list[str]) -> None:
        self.source.class_names = names

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def color_channels(self) -> int:
        return self.source.color_channels

    @property
    def extra_channels(self) -> int:
        return self.source.extra_channels


def subset(source: SegmentationSource, indices: list[int]) -> SegmentationSource:
    """The items ``indices`` of ``source``: arrays sliced for an ArraySource (so that evaluation still batches them),
    a SubsetSource otherwise."""
    if isinstance(source, ArraySource):
        keep = np.asarray(indices, dtype=np.int64)
        return ArraySource(source.images[keep], None if source.labels is None else source.labels[keep],
                           list(source.class_names), [source.item_name(i) for i in keep.tolist()],
                           name=source.name, color_channels=source.color_channels,
                           extra_channels=source.extra_channels)
    return SubsetSource(source, indices)


def select_by_name(source: SegmentationSource, patterns: str, what: str) -> SegmentationSource:
    """The items of ``source`` whose name matches one of the comma-separated globs ``patterns`` (fnmatch, case
    sensitive), in order; ``source`` itself when ``patterns`` is empty. ``what``: "training" or "evaluation"."""
    globs = [p.strip() for p in patterns.split(",") if p.strip()]
    if not globs:
        return source
    keep = [i for i in range(len(source)) if any(fnmatch.fnmatchcase(source.item_name(i), g) for g in globs)]
    if not keep:
        flag = "--train-names" if what == "training" else "--eval-names"
        examples = ", ".join(source.item_name(i) for i in range(min(3, len(source))))
        raise IICError(f"no {what} image matches {flag} {patterns!r} (names look like: {examples or 'no images'})")
    return subset(source, keep)


__all__ = [
    "ArraySource", "CocoStuffSource", "EvaluationImages", "FolderSource", "IGNORE", "PotsdamSource",
    "SegmentationSource", "SubsetSource", "TrainingCrops", "check_crop_scales", "demo_source", "load_npz_source",
    "meets_curation_rule", "select_by_name",
]


# --- a run's data -------------------------------------------------------------------------------------------

def build_source(config: SegmentConfig, purpose: str) -> SegmentationSource:
    """The training or evaluation images of ``config`` (purpose: "train" or "eval"), checked on construction."""
    splits = config.train_splits if purpose == "train" else config.eval_splits
    require_labels = purpose == "eval"
    data_path = Path(config.data_path).expanduser() if config.data_path else None
    if config.dataset == "demo":
        source = demo_source()
    elif config.dataset in ("potsdam", "potsdam3"):
        source = PotsdamSource(data_path, splits, coarse=config.dataset == "potsdam3", require_labels=require_labels)
    elif config.dataset in ("cocostuff3", "cocostuff15"):
        source = CocoStuffSource(data_path, splits, int(config.dataset.removeprefix("cocostuff")),
                                 config.curated_version)
    elif config.dataset == "folder":
        if require_labels and not config.label_dir:
            raise IICError("evaluation needs label maps: pass --label-dir")
        source = FolderSource(data_path, config.label_dir, config.ignore_index)
    elif config.dataset == "npz":
        source = load_npz_source(data_path, splits, config.ignore_index, config.class_groups)
        if require_labels and source.labels is None:
            raise IICError(f"{data_path} has no label maps y_<split> for {', '.join(splits)}")
    else:
        raise IICError(f"unknown dataset {config.dataset!r}")
    if config.class_names and source.class_names:
        if len(config.class_names) != len(source.class_names):
            raise IICError(f"{len(config.class_names)} class names given for {len(source.class_names)} classes")
        source.class_names = list(config.class_names)
    if purpose == "train":
        source = select_by_name(source, config.train_names, "training")
    else:
        source = select_by_name(source, config.eval_names, "evaluation")
    if len(source) == 0:
        raise IICError(f"no images in {data_path}")
    return source


def scaled_size(source: SegmentationSource, scale: float, images: str) -> tuple[int, int]:
    """The size (h, w) of the first of the ``images`` ("training", "evaluation") after ``scale``; one clear error when
    that is below what the network takes."""
    image, _ = source[0]
    size = (scaled_side(image.shape[0], scale), scaled_side(image.shape[1], scale))
    if min(size) < MIN_INPUT_SIDE:
        raise IICError(f"scale {scale} makes the {images} images {size[0]}×{size[1]} pixels: "
                       f"the network needs at least {MIN_INPUT_SIDE} a side")
    return size


def check_training_sizes(config: SegmentConfig, source: SegmentationSource) -> None:
    """One clear error for a crop or a T that the (scaled) training images cannot take."""
    h, w = scaled_size(source, config.scale, "training")
    # Against the longer side: padding a shorter one is the paper's practice (COCO-Stuff's curated images can be
    # 119 pixels high at scale 0.33, under 128-pixel crops); a crop beyond both sides would be padding alone.
    if config.crop_size > max(h, w):
        raise IICError(f"crop_size={config.crop_size} is larger than the {h}×{w} training images (after scale "
                       f"{config.scale}): it must be at most {max(h, w)}")
    if config.T >= min(h, w):
        raise IICError(f"T={config.T} is too large for {h}×{w} images with {config.crop_size}-pixel crops")


def evaluation_loader(config: SegmentConfig, source: SegmentationSource, world_size: int = 1,
                      rank: int = 0) -> torch.utils.data.DataLoader:
    """The evaluation images in order; under DDP this process's share of them, each image in exactly one share."""
    same_size = config.eval_crop_size > 0 or hasattr(source, "images")
    dataset = EvaluationImages(source, config.scale, config.eval_crop_size or None)
    return torch.utils.data.DataLoader(
        dataset, batch_size=config.eval_batch_size if same_size else 1, shuffle=False, num_workers=config.num_workers,
        sampler=evaluation_sampler(dataset, world_size, rank),
    )
