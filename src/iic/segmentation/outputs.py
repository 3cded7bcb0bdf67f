"""What a segmentation run shows: segmentation.png, and label maps (palette PNGs and overlays) for new images."""

import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from iic.data.images import load_image, save_png
from iic.engine.curves import save_figure
from iic.errors import IICError, printable
from iic.segmentation.config import MIN_INPUT_SIDE, SegmentConfig, scaled_side
from iic.segmentation.data import EvaluationImages, SegmentationSource


def palette(num_colours: int) -> np.ndarray:
    """Distinct colours (uint8 num × 3), tab20 first, then golden-ratio hues."""
    import matplotlib

    base = (np.array(matplotlib.colormaps["tab20"].colors) * 255).astype(np.uint8)
    if num_colours <= len(base):
        return base[:num_colours]
    hues = (np.arange(num_colours - len(base)) * 0.618034) % 1.0
    extra = (np.array([matplotlib.colors.hsv_to_rgb((h, 0.8, 0.9)) for h in hues]) * 255).astype(np.uint8)
    return np.concatenate([base, extra])


def colourise(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """H × W ids (IGNORE shown black) → H × W × 3 uint8."""
    out = np.zeros(labels.shape + (3,), dtype=np.uint8)
    valid = labels >= 0
    out[valid] = colours[labels[valid] % len(colours)]
    return out


def display_image(x: torch.Tensor, color_channels: int = 3) -> np.ndarray:
    """C × H × W [0, 1] tensor → H × W × 3 uint8 (its colour channels)."""
    colour = x[:color_channels]
    if colour.shape[0] == 1:
        colour = colour.repeat(3, 1, 1)
    return (colour.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)


def write_segmentation_figure(path: Path, module, source: SegmentationSource, config: SegmentConfig,
                              num_images: int = 4) -> None:
    """segmentation.png: input / prediction / ground truth for a few images, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset = EvaluationImages(source, config.scale, config.eval_crop_size or None)
    count = min(num_images, len(dataset))
    with_truth = source.has_labels
    columns = 3 if with_truth else 2
    figure, axes = plt.subplots(count, columns, figsize=(3.2 * columns, 2.6 * count), squeeze=False)
    mapped = bool((module.cluster_to_class >= 0).any())
    colours = palette(max(module.config.k_b, len(module.class_names)))
    module.eval()
    for row in range(count):
        index = row * len(dataset) // count
        x, y, _ = dataset[index]
        clusters = module.predict_clusters(x[None].to(module.device))[0].cpu()
        prediction = module.cluster_to_class.cpu()[clusters] if mapped else clusters
        panels = [("input", display_image(x, module.color_channels)),
                  ("prediction" + (" (matched)" if mapped else " (clusters)"), colourise(prediction.numpy(), colours))]
        if with_truth:
            panels.append(("ground truth", colourise(y.numpy(), colours)))
        for column, (title, picture) in enumerate(panels):
            axis = axes[row, column]
            axis.imshow(picture, interpolation="nearest")
            axis.set_title(f"{printable(source.item_name(index))}: {title}" if column == 0 else title, fontsize=8)
            axis.axis("off")
    figure.tight_layout()
    save_figure(figure, path, dpi=80)


def output_names(paths: list[Path]) -> list[str]:
    """A distinct name per image file for its outputs: its stem; where stems clash (case-insensitively, as on
    some file systems), its folder's name and stem; then a counter if names still clash."""
    stem_counts = Counter(path.stem.lower() for path in paths)
    wanted = [path.stem if stem_counts[path.stem.lower()] == 1 else f"{path.absolute().parent.name}_{path.stem}"
              for path in paths]
    taken = {name.lower() for name, path in zip(wanted, paths) if stem_counts[path.stem.lower()] == 1}
    names = []
    for name, path in zip(wanted, paths):
        if stem_counts[path.stem.lower()] > 1:
            base, number = name, 2
            while name.lower() in taken:
                name, number = f"{base}_{number}", number + 1
            taken.add(name.lower())
        names.append(name)
    return names


@torch.no_grad()
def segment_images(module, images: list[np.ndarray], scale: float = 1.0) -> list[np.ndarray]:
    """Per uint8 H × W × 3 image, an H × W int64 map of class ids (the clusters matched to classes by the run's
    evaluation; cluster ids when it had no labels), segmented at ``scale``."""
    if module.extra_channels:
        raise IICError("this model takes extra input channels (e.g. infrared): predict needs RGB-only models")
    mapped = bool((module.cluster_to_class >= 0).any())
    maps = []
    for image in images:
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)[None]
        h, w = image.shape[:2]
        size = (max(MIN_INPUT_SIDE, scaled_side(h, scale)), max(MIN_INPUT_SIDE, scaled_side(w, scale)))
        if size != (h, w):
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=size[0] < h or size[1] < w)
        clusters = module.predict_clusters(x.to(module.device))[0].cpu()
        labels = module.cluster_to_class.cpu()[clusters] if mapped else clusters
        maps.append(torch.nn.functional.interpolate(labels[None, None].float(), size=(h, w), mode="nearest")[0, 0]
                    .long().numpy())
    return maps


def predict_images(module, paths: list[Path], out_dir: Path, scale: float = 1.0) -> list[Path]:
    """Per image: ``<name>_labels.png`` (palette PNG of class ids, or cluster ids when unmatched) and
    ``<name>_overlay.png``, the name its stem unless stems clash (see ``output_names``)."""
    if not 0 < scale < math.inf:
        raise IICError(f"scale must be positive and finite, got {scale}")
    colours = palette(max(module.config.k_b, len(module.class_names)))
    flat_palette = np.zeros((256, 3), dtype=np.uint8)
    flat_palette[: len(colours)] = colours[:256]
    images = [load_image(p, channels=3) for p in paths]  # read everything first: no partial output on a bad file
    for path, image in zip(paths, images):
        check_predict_size(path, image.shape[:2], scale)
    pictures = []  # and segment everything before writing anything
    for name, image, labels in zip(output_names(paths), images, segment_images(module, images, scale)):
        label_image = Image.fromarray(np.clip(labels, 0, 255).astype(np.uint8), mode="P")
        label_image.putpalette(flat_palette.reshape(-1).tolist())
        overlay = (0.5 * image + 0.5 * colourise(labels, colours)).astype(np.uint8)
        pictures += [(out_dir / f"{name}_labels.png", label_image),
                     (out_dir / f"{name}_overlay.png", Image.fromarray(overlay))]
    for target, picture in pictures:
        save_png(target, picture)
    return [target for target, _ in pictures]


def check_predict_size(path: Path, size: tuple[int, int], scale: float) -> None:
    """Images narrower than the network takes are enlarged to it; a scale that shrinks one to under that is refused
    (a whole image squeezed into 2 × 2 pixels segments into noise)."""
    for side in size:
        scaled = scaled_side(side, scale)
        if scaled < MIN_INPUT_SIDE and scaled < side:
            raise IICError(f"scale {scale} shrinks {path} ({size[0]}×{size[1]}) to under {MIN_INPUT_SIDE} pixels "
                           f"a side, the network's least: give a larger --scale")
