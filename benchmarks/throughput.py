"""Training pairs/s of iic's pipeline against a re-creation of the official one, same network and batch.

Official (xu-ji/IIC, MNIST script): PIL images, per-image torchvision transforms in a DataLoader — x: centre
or random crop; g(x): rotation half the time, one of the crop sizes, jitter — collated, then separate forward
passes for x and g(x).
Ours: uint8 tensors in memory, batched views on the model's device (kornia), separate forward passes; x's r
identical copies go through the network once (``IICNet.forward_pair``: same outputs and gradients), where the
official code passes all r.
Both run the same ClusterNet6c + heads (iic's, which runs its convolutions channels-last; the official
code's network did not), the same IIC loss and Adam step, in this one process, in float32; a last row
adds iic's bf16-mixed precision. The GFLOP/s column (torch's FlopCounterMode: convolutions and matrix
products, forward and backward) is set against this machine's convolution peak, measured on one large
convolution of the network's kernel size, to show how far each pipeline is from what the CPU can do.

    .venv/bin/python benchmarks/throughput.py [--preset mnist] [--steps 20] [--widths 32 64 128 128] [--conv-size 3]
"""

import argparse
import sys
import time

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from iic.clustering.config import CLUSTER_PRESETS, ClusterConfig
from iic.clustering.network import IICNet
from iic.clustering.views import ClusterViews
from iic.config import config_from_dict
from iic.losses import iic_losses


class OfficialStylePairs(Dataset):
    """Per image: x = crop + resize; r copies of g(x) = random crop + resize + rotation + jitter (PIL)."""

    def __init__(self, images: np.ndarray, config: ClusterConfig):
        self.images = [Image.fromarray(im) for im in images]
        size = config.input_size
        x_crops = {"random": T.RandomCrop(config.crop_size), "centre": T.CenterCrop(config.crop_size),
                   "centre_half": T.RandomChoice([T.RandomCrop(config.crop_size), T.CenterCrop(config.crop_size)])}
        self.tf_x = T.Compose([x_crops[config.x_crop], T.Resize(size), T.ToTensor()])
        b, c, _, _ = config.jitter
        self.tf_g = T.Compose([
            T.RandomApply([T.RandomRotation(config.rotation)], p=config.rotation_p),
            T.RandomChoice([T.RandomCrop(s) for s in range(config.tf_crop_sizes[0], config.tf_crop_sizes[1] + 1, 4)]),
            T.Resize(size), T.ColorJitter(b, c), T.ToTensor(),
        ])
        self.repeats = config.repeats

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        image = self.images[i]
        return torch.cat([self.tf_x(image)] * self.repeats), torch.cat([self.tf_g(image) for _ in range(self.repeats)])


def official_forward_pair(net: IICNet, x: torch.Tensor, gx: torch.Tensor,
                          head: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The official code's passes: all r·n views of x (r copies of each) and of g(x), NCHW memory layout throughout."""
    def forward(images):
        return torch.cat([tower(net.input_layer(images), head) for tower in net.towers])
    return forward(x), forward(gx)


def train_step(net, optimizer, x, gx, bf16=False, forward_pair=IICNet.forward_pair):
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        p, p_tf = forward_pair(net, x, gx, "B")
        loss = iic_losses(p, p_tf)[0].mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(step, steps: int, pairs_per_step: int, device) -> float:
    step()  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * pairs_per_step / (time.perf_counter() - start)


def flops_of(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def convolution_peak(kernel_size: int, device, dtype: torch.dtype, channels: int = 256, side: int = 24,
                     batch: int = 32, steps: int = 5) -> float:
    """FLOP/s of one large channels-last convolution's forward pass: a practical ceiling for this network."""
    x = torch.randn(batch, channels, side, side, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, bias=False)
    conv = conv.to(device=device, dtype=dtype, memory_format=torch.channels_last)
    with torch.no_grad():
        rate = measure(lambda: conv(x), steps, 1, device)
    return rate * 2 * batch * side * side * channels * channels * kernel_size ** 2


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="mnist")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=None, help="distinct images per step (default: preset's)")
    parser.add_argument("--widths", type=int, nargs=4, default=None)
    parser.add_argument("--conv-size", type=int, default=None, help="ClusterNet6c kernel side (the preset's: 5)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for the official-style pipeline")
    args = parser.parse_args()
    overrides = {k: v for k, v in (("batch_size", args.batch_size), ("widths", args.widths),
                                   ("conv_size", args.conv_size)) if v}
    config = config_from_dict(ClusterConfig, {**CLUSTER_PRESETS[args.preset], **overrides, "preset": args.preset})
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    n = config.batch_size * (args.steps + 2)
    shape = (n, config.image_size, config.image_size) + ((3,) if config.channels == 3 else ())
    raw = rng.integers(0, 256, shape, dtype=np.uint8)
    pairs = config.batch_size * config.repeats

    torch.manual_seed(0)
    net = IICNet(config, config.channels).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    official_net = IICNet(config, config.channels).to(device).to(memory_format=torch.contiguous_format)
    official_optimizer = torch.optim.Adam(official_net.parameters(), lr=config.lr)

    loader = DataLoader(OfficialStylePairs(raw, config), batch_size=config.batch_size, shuffle=True,
                        num_workers=args.workers, drop_last=True, persistent_workers=args.workers > 0)
    batches = iter(loader)

    def official_step():
        x, gx = next(batches)
        c = config.channels
        x = x.view(-1, config.repeats, c, *x.shape[-2:]).transpose(0, 1).reshape(-1, c, *x.shape[-2:])
        gx = gx.view(-1, config.repeats, c, *gx.shape[-2:]).transpose(0, 1).reshape(-1, c, *gx.shape[-2:])
        train_step(official_net, official_optimizer, x.to(device), gx.to(device), forward_pair=official_forward_pair)

    images = torch.from_numpy(raw if raw.ndim == 4 else raw[..., None]).permute(0, 3, 1, 2).contiguous().to(device)
    views = ClusterViews(config, config.channels).to(device)
    cursor = [0]

    def our_step(bf16=False):
        batch = images[cursor[0]:cursor[0] + config.batch_size]
        cursor[0] = (cursor[0] + config.batch_size) % (n - config.batch_size)
        train_step(net, optimizer, *views(batch), bf16=bf16)

    def views_only():
        views(images[: config.batch_size])

    def network_only():
        gx = torch.rand(pairs, config.channels, config.input_size, config.input_size, device=device)
        train_step(net, optimizer, gx[:config.batch_size], gx)

    official = measure(official_step, args.steps, pairs, device)
    ours = measure(our_step, args.steps, pairs, device)
    ours_bf16 = measure(lambda: our_step(bf16=True), args.steps, pairs, device)
    network = measure(network_only, args.steps, pairs, device)
    view_rate = measure(views_only, args.steps, pairs, device)
    official_flops, our_flops = flops_of(official_step) / pairs, flops_of(our_step) / pairs  # per pair
    peaks = {dtype: convolution_peak(config.conv_size, device, dtype) for dtype in (torch.float32, torch.bfloat16)}
    print(f"preset {args.preset}, device {device}, batch {config.batch_size} images × r={config.repeats} = "
          f"{pairs} pairs, widths {tuple(config.widths)}, {config.conv_size}×{config.conv_size} convs, "
          f"torch threads {torch.get_num_threads()}, official-style workers {args.workers}")
    print("| pipeline | training pairs/s | ratio to official | GFLOP/s |\n|---|---:|---:|---:|")
    print(f"| official-style (PIL per image, DataLoader) | {official:,.0f} | 1.00 | "
          f"{official * official_flops / 1e9:,.0f} |")
    print(f"| iic (batched kornia views on device) | {ours:,.0f} | {ours / official:.2f} | "
          f"{ours * our_flops / 1e9:,.0f} |")
    print(f"| iic, --precision bf16-mixed | {ours_bf16:,.0f} | {ours_bf16 / official:.2f} | "
          f"{ours_bf16 * our_flops / 1e9:,.0f} |")
    print(f"| network + loss only (upper bound) | {network:,.0f} | {network / official:.2f} | "
          f"{network * our_flops / 1e9:,.0f} |")
    print(f"| iic views only | {view_rate:,.0f} | {view_rate / official:.2f} | |")
    print(f"\nwork per pair: official-style {official_flops / 1e6:.0f} MFLOP, iic {our_flops / 1e6:.0f} MFLOP; "
          f"one large {config.conv_size}×{config.conv_size} convolution's forward pass on this device: float32 "
          f"{peaks[torch.float32] / 1e9:,.0f} GFLOP/s, bfloat16 {peaks[torch.bfloat16] / 1e9:,.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
