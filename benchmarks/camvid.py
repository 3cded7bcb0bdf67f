"""Unsupervised segmentation of CamVid scenes never seen in training: leave one sequence out.

    flock /tmp/iic-bench.lock python benchmarks/camvid.py --data ../shared/datasets/camvid_180x240_trainval.npz \
        [--settings camvid3 camvid] [--methods colours features scratch frozen] [--held-out 0016E5 0006R0 0001TP] \
        [--scratch-minutes 4]

CamVid's 468 images (its train and val splits together) come from three video sequences, and the frames of one
sequence are near-duplicates: the file names say which (0016E5: 305 images, 0006R0: 101, 0001TP: 62, at dusk). Each
method learns without labels on two sequences and is scored on the third, for each of the three, side by side:

* k-means on pixel colours, and k-means on the frozen EfficientNet-Lite0 feature maps the frozen IIC sees;
* IIC from scratch (presets camvid3 / camvid: SegmentationNet10a on Sobel + colour, wall-clock capped);
* IIC on frozen features (presets camvid3-features / camvid-features: heads on EfficientNet-Lite0's maps).

k = classes for every method; figures are pooled pixel accuracy and mIoU over every valid pixel of the held-out
sequence at 180×240, after one Hungarian matching; head A (over-clustering, many-to-one) is reported apart. Labels
only say which pixels count (CamVid-3 masks everything but sky, road + pavement and trees, as COCO-Stuff-3 masks
"things"). Sub-heads are chosen by their loss, never by labels; the presets' other settings were chosen on the
held-out-0006R0 fold, and camvid3's λ_B and lr earlier on validation frames of 0016E5 (see BENCHMARKS.md): those
figures are marked * and left out of the untuned mean.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans

from iic.config import config_from_dict
from iic.metrics import segmentation_scores
from iic.segmentation.api import run_training
from iic.segmentation.backbones import pretrained_dense_backbone
from iic.segmentation.config import SEGMENT_PRESETS, SegmentConfig
from iic.segmentation.data import load_npz_source, select_by_name
from iic.segmentation.features import CachedFeatureCrops

ROOT = Path(__file__).resolve().parents[1]
SEQUENCES = ("0016E5", "0006R0", "0001TP")
# (setting, method) → the held-out sequence whose scores chose that preset's settings
TUNED_ON = {("camvid3", "scratch"): "0016E5", ("camvid3", "frozen"): "0006R0", ("camvid", "frozen"): "0006R0"}
SETTINGS = {"camvid3": ("CamVid-3", "camvid3", "camvid3-features"),
            "camvid": ("CamVid-11", "camvid", "camvid-features")}
METHODS = {"colours": "k-means on colours", "features": "k-means on Lite0 features", "scratch": "IIC from scratch",
           "frozen": "IIC on frozen Lite0"}


def contingency(pred: np.ndarray, truth: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    valid = truth >= 0
    table = np.zeros((k, num_classes), dtype=np.int64)
    np.add.at(table, (pred[valid], truth[valid]), 1)
    return table


def kmeans_colours(train, test, k: int, seed: int = 0, samples: int = 200_000):
    """k-means on the RGB colours of valid training pixels, applied to every valid held-out pixel."""
    pixels = train.images.reshape(-1, 3)
    valid = np.flatnonzero(train.labels.reshape(-1) >= 0)
    chosen = np.random.default_rng(seed).choice(valid, size=min(samples, len(valid)), replace=False)
    kmeans = KMeans(k, n_init=3, random_state=seed).fit(pixels[chosen].astype(np.float32) / 255)
    truth = test.labels.reshape(-1).astype(np.int64)
    pred = np.zeros_like(truth)
    keep = truth >= 0
    pred[keep] = kmeans.predict(test.images.reshape(-1, 3)[keep].astype(np.float32) / 255)
    return contingency(pred, truth, k, test.num_classes)


def kmeans_features(trunk, train, test, k: int, scale: float, seed: int = 0, samples: int = 100_000):
    """k-means on the frozen trunk's per-cell features of valid training pixels; each held-out cell gets its nearest
    centre, upsampled to the labels' resolution."""
    cached = CachedFeatureCrops(trunk, train, crop_size=trunk.stride, scale=scale, mask_unlabelled=True, mirror=False,
                                progress=False)
    cells = torch.cat([f.flatten(1).T[m.flatten()] for f, m in zip(cached.features, cached.masks)]).float()
    chosen = np.random.default_rng(seed).choice(len(cells), size=min(samples, len(cells)), replace=False)
    kmeans = KMeans(k, n_init=3, random_state=seed).fit(cells[chosen].numpy())
    centres = torch.from_numpy(kmeans.cluster_centers_).float()
    table = np.zeros((k, test.num_classes), dtype=np.int64)
    for start in range(0, len(test), 16):
        x = torch.from_numpy(test.images[start:start + 16]).permute(0, 3, 1, 2).float().div(255)
        size = x.shape[-2:]
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", recompute_scale_factor=False)
        with torch.no_grad():
            features = trunk(x)
            n, c, h, w = features.shape
            nearest = torch.cdist(features.permute(0, 2, 3, 1).reshape(-1, c), centres).argmin(1).view(n, h, w)
        onehot = F.one_hot(nearest, k).permute(0, 3, 1, 2).float()
        pred = F.interpolate(onehot, size=size, mode="bilinear", align_corners=False).argmax(1)
        table += contingency(pred.numpy().reshape(-1), test.labels[start:start + 16].reshape(-1).astype(np.int64),
                             k, test.num_classes)
    return table


@torch.no_grad()
def iic_tables(module, test, config: SegmentConfig) -> dict[str, np.ndarray]:
    """Each head's table (reported sub-head), predicted at ``config.scale`` and upsampled to the labels' resolution."""
    module.eval()
    tables = {head: np.zeros((module.num_clusters[head], test.num_classes), dtype=np.int64)
              for head in module.head_names}
    for start in range(0, len(test), 8):
        x = torch.from_numpy(test.images[start:start + 8]).permute(0, 3, 1, 2).float().div(255)
        size = x.shape[-2:]
        small = F.interpolate(x, scale_factor=config.scale, mode="bilinear", antialias=config.scale < 1,
                              recompute_scale_factor=False)
        truth = test.labels[start:start + 8].reshape(-1).astype(np.int64)
        for head in module.head_names:
            maps = module(small.to(module.device), head)[module.reported_subhead(head)]
            clusters = F.interpolate(maps, size=size, mode="bilinear", align_corners=False).argmax(dim=1)
            tables[head] += contingency(clusters.cpu().numpy().reshape(-1), truth, module.num_clusters[head],
                                        test.num_classes)
    return tables


def settings_from(pairs: list[str]) -> dict:
    """KEY=VALUE pairs (values in YAML: 3, 1e-4, [0.5, 1.5]) → overrides of a preset."""
    import yaml

    return {key: yaml.safe_load(value) for key, _, value in (pair.partition("=") for pair in pairs)}


def train_iic(preset: str, data: Path, held_out: str, minutes: float, out_dir: str, stamp: str, extra: dict):
    train_names = ",".join(f"{s}_*" for s in SEQUENCES if s != held_out)
    overrides = {"preset": preset, "data_path": str(data), "train_splits": ("train", "val"),
                 "eval_splits": ("train", "val"), "train_names": train_names, "eval_names": f"{held_out}_*",
                 "out_dir": out_dir, "name": f"{preset}-{held_out}-{stamp}"}
    if minutes > 0:  # a wall-clock budget instead of the preset's epochs
        overrides.update(max_minutes=minutes, epochs=10_000, eval_every=10_000)
    overrides.update(extra)
    config = config_from_dict(SegmentConfig, {**SEGMENT_PRESETS[preset], **overrides})
    start = time.perf_counter()
    result = run_training(config, progress=False)
    return result, config, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path,
                        help="CamVid as .npz, e.g. ../shared/datasets/camvid_180x240_trainval.npz")
    parser.add_argument("--settings", nargs="+", choices=tuple(SETTINGS), default=tuple(SETTINGS))
    parser.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=tuple(METHODS))
    parser.add_argument("--held-out", nargs="+", choices=SEQUENCES, default=SEQUENCES)
    parser.add_argument("--scratch-minutes", type=float, default=4.0, help="IIC-from-scratch training budget per run")
    parser.add_argument("--scratch-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="settings over the scratch presets (trials on the tuning fold)")
    parser.add_argument("--frozen-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="settings over the frozen-feature presets")
    parser.add_argument("--out-dir", default=str(ROOT / "runs" / "bench-camvid"))
    args = parser.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    trunk = pretrained_dense_backbone("efficientnet_lite0") if "features" in args.methods else None
    rows = []  # (setting, method, held-out, pixel acc, mIoU, seconds, head A's pixel acc or None, tuned on it)
    for setting in args.settings:
        label, scratch_preset, frozen_preset = SETTINGS[setting]
        groups = SEGMENT_PRESETS[scratch_preset].get("class_groups")
        everything = load_npz_source(args.data, ("train", "val"), class_groups=groups)
        k = everything.num_classes
        for held_out in args.held_out:
            train = select_by_name(everything, ",".join(f"{s}_*" for s in SEQUENCES if s != held_out), "training")
            test = select_by_name(everything, f"{held_out}_*", "evaluation")
            for method in args.methods:
                start = time.perf_counter()
                head_a = None
                if method == "colours":
                    table = kmeans_colours(train, test, k)
                elif method == "features":
                    table = kmeans_features(trunk, train, test, k, SEGMENT_PRESETS[frozen_preset]["scale"])
                else:
                    preset = scratch_preset if method == "scratch" else frozen_preset
                    minutes = args.scratch_minutes if method == "scratch" else 0
                    extra = settings_from(args.scratch_set if method == "scratch" else args.frozen_set)
                    result, config, _ = train_iic(preset, args.data, held_out, minutes, args.out_dir, stamp, extra)
                    tables = iic_tables(result.model.module, test, config)
                    table = tables["B"]
                    if "A" in tables:
                        head_a = segmentation_scores(tables["A"]).pixel_acc
                scores = segmentation_scores(table)
                seconds = time.perf_counter() - start
                tuned = TUNED_ON.get((setting, method)) == held_out
                rows.append((label, method, held_out, scores.pixel_acc, scores.miou, seconds, head_a, tuned))
                print(f"{label} held out {held_out}: {METHODS[method]} {100 * scores.pixel_acc:.1f}% "
                      f"(mIoU {100 * scores.miou:.1f}%, {seconds:.0f} s)", flush=True)
    print_table(rows, args)


def print_table(rows, args) -> None:
    print()
    print(f"CamVid 180x240, leave one sequence out (trained without labels on the other two); head B, k = classes; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; * = the preset was tuned on this fold")
    if args.scratch_set or args.frozen_set:
        scratch, frozen = " ".join(args.scratch_set) or "-", " ".join(args.frozen_set) or "-"
        print(f"over the presets: scratch {scratch}; frozen {frozen}")
    folds = list(args.held_out)
    header = " | ".join(f"{s}: acc / mIoU" for s in folds)
    print(f"| setting | method | {header} | mean acc / mIoU | untuned mean acc | time per fold |")
    print("|---|---|" + "---|" * len(folds) + "---|---|---|")
    for label in dict.fromkeys(r[0] for r in rows):
        for method in dict.fromkeys(r[1] for r in rows if r[0] == label):
            mine = {r[2]: r for r in rows if r[0] == label and r[1] == method}
            cells = " | ".join(f"{100 * mine[s][3]:.1f} / {100 * mine[s][4]:.1f}{'*' if mine[s][7] else ''}"
                               if s in mine else "–" for s in folds)
            accs, mious = [mine[s][3] for s in mine], [mine[s][4] for s in mine]
            untuned = [mine[s][3] for s in mine if not mine[s][7]]
            seconds = np.mean([mine[s][5] for s in mine])
            untuned_mean = f"{100 * np.mean(untuned):.1f}" if untuned else "–"
            print(f"| {label} | {METHODS[method]} | {cells} | {100 * np.mean(accs):.1f} / {100 * np.mean(mious):.1f} | "
                  f"{untuned_mean} | {seconds / 60:.1f} min |")
    head_a = [r for r in rows if r[6] is not None]
    if head_a:
        print()
        print("Head A (over-clustering, many-to-one) pixel accuracy: " + ", ".join(
            f"{r[0]} {METHODS[r[1]]} held out {r[2]}: {100 * r[6]:.1f}%" for r in head_a))


if __name__ == "__main__":
    main()
