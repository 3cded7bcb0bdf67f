"""Prediction speed of a clustering model: PyTorch eager (``iic predict RUN``'s path), PyTorch with ``torch.compile``,
and ONNX Runtime on the exported file (``iic predict model.onnx``), side by side in one run, on this CPU.

Two networks: the embedded default (preset ``digits``: two ClusterNet6c 16-32-64-64 trunks, 16×16 greyscale) and the
MNIST recipe's (benchmarks/mnist.py: ClusterNet6c 32-64-128-128, 5×5 kernels, 28×28 read, 20-px centre crop resized
to 24). Their weights are random with batch-norm statistics of real digits (speed does not depend on what was learnt);
each is saved as a run directory and exported with ``iic export``, as a user would.

* images/s at batch 1 and 256: the model's forward from uint8 images (preprocessing included) to probabilities,
  timed after warm-up, median of repeats; torch threads and ONNX Runtime's intra-op threads both ``--threads``.
* cold start: a new process, from its start to the first prediction written — ``iic predict RUN one.png`` (eager),
  the same with the model compiled first (``torch.compile``), and ``iic predict model.onnx one.png`` (ONNX Runtime,
  which imports no torch) — median of ``--cold-repeats`` runs.

    .venv/bin/python benchmarks/predict.py [--threads 2] [--seconds 2] [--cold-repeats 3] [--out-dir /tmp/iic-predict]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from mnist import CPU_RECIPE  # noqa: E402  (the MNIST recipe's network)

from iic.clustering.config import CLUSTER_PRESETS, ClusterConfig  # noqa: E402
from iic.clustering.module import ClusterModule  # noqa: E402
from iic.config import config_to_dict  # noqa: E402
from iic.export.serving import OnnxModel  # noqa: E402

NETWORKS = {
    "digits": CLUSTER_PRESETS["digits"],
    "mnist recipe": {**CLUSTER_PRESETS["mnist"], **CPU_RECIPE},
}


def digit_images(size: int, count: int) -> np.ndarray:
    """scikit-learn's 8×8 digits (real images, shipped with it) at ``size``², uint8 N × size × size × 1."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = (load_digits().images * 16).clip(0, 255).astype(np.uint8)
    picked = digits[np.arange(count) % len(digits)]
    return np.stack([np.asarray(Image.fromarray(d).resize((size, size), Image.BILINEAR)) for d in picked])[..., None]


def trained_like(name: str, images: np.ndarray) -> ClusterModule:
    """The network with random weights and batch-norm statistics of ``images``."""
    config = ClusterConfig(**NETWORKS[name])
    module = ClusterModule(config_to_dict(config), channels=1)
    for norm in module.modules():
        if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
            norm.momentum = None  # a cumulative average over the batches below
    module.train()
    with torch.no_grad():
        for start in range(0, len(images), 256):
            x = torch.from_numpy(images[start:start + 256]).permute(0, 3, 1, 2)
            module.net.forward_all(module.views.eval_view(x))
    return module.eval()


def save_run(module: ClusterModule, run_dir: Path) -> Path:
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text("preset: benchmark\n")
    torch.save({"task": "clustering", "hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()},
               run_dir / "checkpoints" / "last.ckpt")
    return run_dir


def rate(predict, batch: np.ndarray, seconds: float) -> float:
    """Images per second of ``predict(batch)``: median over repeats of about ``seconds / 5`` each, after warm-up."""
    for _ in range(3):
        predict(batch)
    rates = []
    for _ in range(5):
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 5:
            predict(batch)
            count += 1
        rates.append(count * len(batch) / (time.perf_counter() - started))
    return statistics.median(rates)


def cold_start(command: list[str], repeats: int) -> float:
    """Median seconds from a new process's start to its exit after writing the first prediction."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return statistics.median(times)


COMPILED_PREDICT = """
import sys, time, torch
torch.set_num_threads({threads})
from iic.loading import load
model = load(sys.argv[1])
module = model.module
subhead = module.reported_subhead("B")
compiled = torch.compile(lambda x: module.net.subhead(module.views.eval_view(x), "B", subhead))
with torch.no_grad():
    probs = compiled(model.images(sys.argv[2]))[0]
with open(sys.argv[3], "w") as out:
    out.write(f"path,cluster,probability\\n{{sys.argv[2]}},{{int(probs.argmax())}},{{float(probs.max()):.4f}}\\n")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per method and batch size")
    parser.add_argument("--cold-repeats", type=int, default=3)
    parser.add_argument("--out-dir", default=None, help="where the runs and exported files go (default: a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="iic-predict-"))
    iic = [sys.executable, "-m", "iic"]
    print(f"torch {torch.__version__}, {args.threads} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; files in {out_dir}", flush=True)
    rows = []
    for name in NETWORKS:
        config = ClusterConfig(**NETWORKS[name])
        images = digit_images(config.image_size, 1024)
        module = trained_like(name, images)
        run_dir = save_run(module, out_dir / name.replace(" ", "-"))
        onnx_path = run_dir / "model.onnx"
        subprocess.run([*iic, "export", str(run_dir), "--out", str(onnx_path)], check=True, capture_output=True)
        one = run_dir / "one.png"
        from PIL import Image

        Image.fromarray(images[0, ..., 0]).save(one)

        def eager(batch):
            return module.predict_probs(torch.from_numpy(batch).permute(0, 3, 1, 2))

        subhead = module.reported_subhead("B")
        compiled_graph = torch.compile(lambda x: module.net.subhead(module.views.eval_view(x), "B", subhead))

        def compiled(batch):
            with torch.no_grad():
                return compiled_graph(torch.from_numpy(batch).permute(0, 3, 1, 2))

        served = OnnxModel(onnx_path, threads=args.threads)
        methods = {"PyTorch eager": eager, "PyTorch + torch.compile": compiled, "ONNX Runtime": served.run}
        cold_commands = {
            "PyTorch eager": [*iic, "predict", str(run_dir), str(one), "--out", str(run_dir / "eager.csv")],
            "PyTorch + torch.compile": [sys.executable, "-c", COMPILED_PREDICT.format(threads=args.threads),
                                        str(run_dir), str(one), str(run_dir / "compiled.csv")],
            "ONNX Runtime": [*iic, "predict", str(onnx_path), str(one), "--out", str(run_dir / "onnx.csv"),
                             "--threads", str(args.threads)],
        }
        for method, predict in methods.items():
            single = rate(predict, images[:1], args.seconds)
            batched = rate(predict, images[:256], args.seconds)
            cold = cold_start(cold_commands[method], args.cold_repeats)
            rows.append((name, method, single, batched, cold))
            print(f"  {name:13} {method:24} batch 1: {single:9.0f}/s  batch 256: {batched:9.0f}/s  cold start "
                  f"{cold:5.2f} s", flush=True)
    print("\n| network | method | images/s, batch 1 | images/s, batch 256 | cold start (s) | batch 1 vs eager |")
    print("|---|---|---:|---:|---:|---:|")
    for name, method, single, batched, cold in rows:
        eager_single = next(r[2] for r in rows if r[0] == name and r[1] == "PyTorch eager")
        print(f"| {name} | {method} | {single:,.0f} | {batched:,.0f} | {cold:.2f} | {single / eager_single:.1f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
