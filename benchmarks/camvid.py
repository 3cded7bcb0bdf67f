"""IIC segmentation on CamVid without labels, next to k-means on pixel colours, measured in the same run.

    flock /tmp/iic-bench.lock python benchmarks/camvid.py --data ../shared/datasets/camvid_180x240_trainval.npz \
        [--minutes-3 10 --minutes-11 10]

Two settings on CamVid's 180×240 .npz (367 training, 101 validation images):
* CamVid-3, the analogue of COCO-Stuff-3: sky = {sky}, ground = {road, pavement}, plants = {tree}; every
  other pixel is masked (left out of training and evaluation), as COCO-Stuff-3 masks "things";
* CamVid-11: all 11 classes, void masked.

Both methods learn without labels on the training images (the masks only say which pixels count) and are
scored on the validation images at the file's 180×240 resolution: pixel accuracy pooled over every valid
pixel and mIoU, after one Hungarian matching of clusters to classes (k = number of classes). IIC's
training time is capped by wall clock (``--minutes-*``); its figures are head B's.
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
from iic.segmentation.config import SEGMENT_PRESETS, SegmentConfig
from iic.segmentation.data import load_npz_source

ROOT = Path(__file__).resolve().parents[1]


def contingency(pred: np.ndarray, truth: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    valid = truth >= 0
    table = np.zeros((k, num_classes), dtype=np.int64)
    np.add.at(table, (pred[valid], truth[valid]), 1)
    return table


def kmeans_baseline(train_source, val_source, num_classes: int, seed: int = 0, samples: int = 200_000):
    """k-means (k = classes) on the RGB colours of valid training pixels, applied to every validation pixel."""
    start = time.perf_counter()
    pixels = train_source.images.reshape(-1, 3)
    valid = np.flatnonzero(train_source.labels.reshape(-1) >= 0)
    chosen = np.random.default_rng(seed).choice(valid, size=min(samples, len(valid)), replace=False)
    kmeans = KMeans(num_classes, n_init=3, random_state=seed).fit(pixels[chosen].astype(np.float32) / 255)
    truth = val_source.labels.reshape(-1).astype(np.int64)
    pred = np.full_like(truth, -1)
    keep = truth >= 0
    pred[keep] = kmeans.predict(val_source.images.reshape(-1, 3)[keep].astype(np.float32) / 255)
    return segmentation_scores(contingency(pred, truth, num_classes, num_classes)), time.perf_counter() - start


@torch.no_grad()
def iic_scores(module, val_source, config: SegmentConfig):
    """Head B's clusters predicted at ``config.scale``, upsampled to the labels' resolution, pooled over all images."""
    module.eval()
    k = module.config.k_b
    table = np.zeros((k, val_source.num_classes), dtype=np.int64)
    images = torch.from_numpy(val_source.images).permute(0, 3, 1, 2)
    for start in range(0, len(images), 16):
        x = images[start:start + 16].float().div(255)
        full_size = x.shape[-2:]
        small = F.interpolate(x, scale_factor=config.scale, mode="bilinear", antialias=True,
                              recompute_scale_factor=False)
        maps = module(small.to(module.device), "B")[module.reported_subhead("B")]
        clusters = F.interpolate(maps, size=full_size, mode="bilinear",
                                 align_corners=False).argmax(dim=1).cpu().numpy()
        table += contingency(clusters.reshape(-1), val_source.labels[start:start + 16].reshape(-1).astype(np.int64), k,
                             val_source.num_classes)
    return segmentation_scores(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes-3", type=float, default=10.0, help="IIC training budget for CamVid-3")
    parser.add_argument("--minutes-11", type=float, default=10.0, help="IIC training budget for CamVid-11")
    parser.add_argument("--settings", nargs="+", choices=("camvid3", "camvid"), default=("camvid3", "camvid"))
    parser.add_argument("--out-dir", default=str(ROOT / "runs" / "bench-camvid"))
    parser.add_argument("--data", required=True, type=Path,
                        help="CamVid as .npz, e.g. ../shared/datasets/camvid_180x240_trainval.npz")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows = []
    for preset, minutes, label in (("camvid3", args.minutes_3, "CamVid-3"), ("camvid", args.minutes_11, "CamVid-11")):
        if preset not in args.settings:
            continue
        config = config_from_dict(SegmentConfig, {**SEGMENT_PRESETS[preset], "preset": preset,
                                                  "data_path": str(args.data),
                                                  "max_minutes": minutes, "epochs": 10_000, "eval_every": 10_000,
                                                  "out_dir": args.out_dir, "name": f"{preset}-{stamp}"})
        train_source = load_npz_source(args.data, config.train_splits, class_groups=config.class_groups)
        val_source = load_npz_source(args.data, config.eval_splits, class_groups=config.class_groups)
        baseline, baseline_seconds = kmeans_baseline(train_source, val_source, val_source.num_classes)
        start = time.perf_counter()
        result = run_training(config, progress=False)
        seconds = time.perf_counter() - start
        module = result.model.module
        ours = iic_scores(module, val_source, config)
        steps = int(torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"])
        rows.append((label, val_source.num_classes, baseline, baseline_seconds, ours, seconds, steps, result.run_dir))
        print(f"{label}: k-means {100 * baseline.pixel_acc:.1f}% / IIC {100 * ours.pixel_acc:.1f}% "
              f"({steps} steps, {seconds / 60:.1f} min)", flush=True)

    print()
    print(f"CamVid 180x240, train 367 images without labels, scored on the 101 validation images; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| setting | classes | k-means on colours: pixel acc | mIoU | IIC (head B): pixel acc | mIoU | IIC − k-means "
          "| IIC training |")
    print("|---|---|---|---|---|---|---|---|")
    for label, classes, baseline, baseline_seconds, ours, seconds, steps, run_dir in rows:
        print(f"| {label} | {classes} | {100 * baseline.pixel_acc:.1f}% | {100 * baseline.miou:.1f}% | "
              f"{100 * ours.pixel_acc:.1f}% | {100 * ours.miou:.1f}% | "
              f"{100 * (ours.pixel_acc - baseline.pixel_acc):+.1f} pts | {seconds / 60:.1f} min, {steps} steps |")
    for label, *_, run_dir in rows:
        print(f"{label} run directory: {run_dir}")


if __name__ == "__main__":
    main()
