"""Under DDP the IIC joint is summed over all processes, so loss and gradients equal one process on the union batch.

Both the one-head loss (training) and the many-sub-head one (``iic_losses``, head B's re-fit) are checked; and a
2-process training run evaluates exactly what one process evaluates on its saved model.
"""

import csv
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch import nn

from iic import iic_loss
from iic.cli import main
from iic.clustering.refit import stacked_subhead_probs
from iic.losses import iic_losses

pytestmark = pytest.mark.slow  # trains, or runs the iic command


class PairModel(nn.Module):
    """S sub-heads of 4 clusters held as one linear layer, as in the re-fit; S × n × 4 outputs."""

    def __init__(self, subheads: int):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(6, 4 * subheads)

    def forward(self, x, x_tf):
        return stacked_subhead_probs(self.linear, x, 4), stacked_subhead_probs(self.linear, x_tf, 4)


def summed_loss(p: torch.Tensor, p_tf: torch.Tensor, lamb: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``iic_loss`` for one sub-head, the sum of ``iic_losses`` over several."""
    if len(p) == 1:
        return iic_loss(p[0], p_tf[0], lamb)
    losses, plain = iic_losses(p, p_tf, lamb)
    return losses.sum(), plain.sum()


def union_batch():
    g = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(16, 6, generator=g)
    return x, x + 0.5 * torch.randn(16, 6, generator=g)  # correlated pairs: a loss well away from 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, out_dir: str, lamb: float, subheads: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = nn.parallel.DistributedDataParallel(PairModel(subheads))
        x, x_tf = union_batch()
        shard = slice(rank * 16 // world, (rank + 1) * 16 // world)
        p, p_tf = model(x[shard], x_tf[shard])
        loss, plain = summed_loss(p, p_tf, lamb)
        loss.backward()
        torch.save({"loss": loss.detach(), "plain": plain.detach(),
                    "grads": [q.grad.clone() for q in model.module.parameters()]}, f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # neither process tears gloo down while the other still talks to it (that aborts sporadically)
    finally:
        dist.destroy_process_group()
    # Results are saved: skip interpreter finalisation, where gloo's threads may still hold tensors whose release
    # aborts the process now and then (SIGABRT, "terminate called without an active exception").
    os._exit(0)


@pytest.mark.parametrize("lamb, subheads", [(1.0, 1), (1.3, 1), (3.0, 5)])
def test_two_process_ddp_equals_one_process_on_union_batch(tmp_path, lamb, subheads):
    model = PairModel(subheads)
    loss, plain = summed_loss(*model(*union_batch()), lamb)
    loss.backward()
    mp.start_processes(worker, args=(2, free_port(), str(tmp_path), lamb, subheads), nprocs=2, join=True,
                       start_method="spawn")
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
        assert result["plain"].item() == pytest.approx(plain.item(), rel=1e-5)
        for got, want in zip(result["grads"], [q.grad for q in model.parameters()]):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_two_process_training_run_evaluates_each_image_once_with_the_saved_model(tmp_path):
    """`iic train --devices 2` on CPU (gloo): the evaluation counts each of the 1,797 digits once (Lightning's default
    sampler repeats one to even out the shares), so its scores equal one process's evaluation of the saved model
    exactly; and the validation after each pass uses rank 0's BatchNorm statistics in both processes (each one's
    last training step updates its own), so the last pass's validation equals the final evaluation."""
    run = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "iic", "train", "--devices", "2", "--accelerator", "cpu", "--epochs", "1",
         "--eval-every", "1", "--trunks", "1", "--widths", "8", "8", "16", "16", "--repeats", "2", "--no-progress",
         "--batch-size", "1000",  # more than a process's share (898 or 899 images): capped at the share
         "--out-dir", str(tmp_path), "--name", "ddp"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # rank 0 speaks
    assert result.stdout.count("iic train:") == 1 and result.stdout.count("trained in") == 1, result.stdout
    trained = yaml.safe_load((run / "results.yaml").read_text())
    assert main(["evaluate", str(run), "--out", str(tmp_path / "eval.yaml")]) == 0
    evaluated = yaml.safe_load((tmp_path / "eval.yaml").read_text())
    for head in ("B", "A"):
        assert all(math.isfinite(loss) for loss in trained[head]["subhead_losses"])  # it trained
        assert sum(trained[head]["cluster_sizes"]) == 1797
        assert trained[head]["subheads"] == evaluated[head]["subheads"]
        assert trained[head]["cluster_sizes"] == evaluated[head]["cluster_sizes"]
    with open(run / "metrics.csv") as f:
        validated = [row for row in csv.DictReader(f) if row["val/acc_B"]]
    assert len(validated) == 4  # after each of the 3 passes, then the final evaluation
    scores = [key for key in validated[-1] if key.startswith(("val/acc", "val/nmi", "val/ari"))]
    assert [validated[-2][key] for key in scores] == [validated[-1][key] for key in scores]
