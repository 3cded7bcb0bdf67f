"""Forward+backward time and peak memory of ``dense_iic_loss`` against a per-displacement loop.

    python benchmarks/dense_loss.py [--k 15 --T 10 --n 8 --size 64 --repeats 5 --device cpu]

Both compute the same uncollapsed loss (checked); figures are medians over ``--repeats`` runs after a
warm-up. Peak memory is the high-water mark of memory allocated during one forward+backward, above what
was allocated before it: CUDA's allocator statistics on a GPU, the profiler's allocation events on a CPU.
"""

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from iic.losses import dense_iic_loss, joint_to_loss


def per_displacement_loop(p: torch.Tensor, p_tf: torch.Tensor, T: int, lamb: float = 1.0):
    """The straightforward implementation: one shifted product per displacement."""
    n, k, h, w = p.shape
    joints = []
    for dy in range(-T, T + 1):
        for dx in range(-T, T + 1):
            y0, y1 = max(0, -dy), min(h, h - dy)
            x0, x1 = max(0, -dx), min(w, w - dx)
            shifted = p[:, :, y0 + dy:y1 + dy, x0 + dx:x1 + dx]
            anchor = p_tf[:, :, y0:y1, x0:x1]
            joints.append(torch.einsum("nihw,njhw->ij", shifted, anchor))
    return joint_to_loss(torch.stack(joints), lamb)


def make_inputs(n, k, size, device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    # Smooth, correlated logits so that the maps carry real mutual information, as trained ones do.
    logits = torch.nn.functional.avg_pool2d(torch.randn(n, k, size, size, generator=generator) * 8, 9, 1, 4)
    logits_tf = logits + 0.5 * torch.randn(n, k, size, size, generator=generator)
    logits, logits_tf = logits.to(device).requires_grad_(), logits_tf.to(device).requires_grad_()
    return logits, logits_tf


def step(fn, logits, logits_tf, T):
    loss, _ = fn(logits.softmax(1), logits_tf.softmax(1), T)
    loss.backward()
    return loss.detach()


def time_step(fn, args, T, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step(fn, *args, T)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def peak_memory(fn, args, T, device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(fn, *args, T)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(fn, *args, T)
    # Each allocation and free is charged to the innermost operator (or to a bare "[memory]" event):
    # replaying the operators' own net usage in time order traces the allocated total.
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    level = peak = 0
    for event in events:
        level += event.self_cpu_memory_usage
        peak = max(peak, level)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=15)
    parser.add_argument("--T", type=int, default=10)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    inputs = make_inputs(args.n, args.k, args.size, device)

    def dense(p, p_tf, T):
        return dense_iic_loss(p, p_tf, T=T)

    methods = {"dense_iic_loss (FFT)": dense, "per-displacement loop": per_displacement_loop}
    losses = {name: step(fn, *inputs, args.T).item() for name, fn in methods.items()}  # warm-up
    values = list(losses.values())
    assert abs(values[0] - values[1]) < 1e-4 * max(1.0, abs(values[1])), f"the two disagree: {losses}"

    times = {name: statistics.median(time_step(fn, inputs, args.T, device) for _ in range(args.repeats))
             for name, fn in methods.items()}
    memory = {name: peak_memory(fn, inputs, args.T, device) for name, fn in methods.items()}
    dense_name, loop_name = methods
    print(f"dense IIC loss, forward+backward: k={args.k} T={args.T} n={args.n} {args.size}x{args.size} on {device} "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads), loss {values[0]:.5f}")
    print("| method | time (ms) | peak memory (MiB) |")
    print("|---|---|---|")
    for name in methods:
        print(f"| {name} | {times[name] * 1e3:.1f} | {memory[name] / 2**20:.1f} |")
    print(f"| ratio loop / dense | {times[loop_name] / times[dense_name]:.1f}x faster | "
          f"{memory[loop_name] / max(memory[dense_name], 1):.1f}x less memory |")


if __name__ == "__main__":
    main()
