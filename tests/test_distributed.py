"""Under DDP the IIC joint is summed over all processes, so loss and gradients equal one process on the union batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from iic import iic_loss


class PairModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(6, 4)

    def forward(self, x, x_tf):
        return self.linear(x).softmax(1), self.linear(x_tf).softmax(1)


def union_batch():
    g = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(16, 6, generator=g)
    return x, x + 0.5 * torch.randn(16, 6, generator=g)  # correlated pairs: a loss well away from 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, out_dir: str, lamb: float) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = nn.parallel.DistributedDataParallel(PairModel())
        x, x_tf = union_batch()
        shard = slice(rank * 16 // world, (rank + 1) * 16 // world)
        p, p_tf = model(x[shard], x_tf[shard])
        loss, plain = iic_loss(p, p_tf, lamb)
        loss.backward()
        torch.save({"loss": loss.detach(), "plain": plain.detach(),
                    "grads": [q.grad.clone() for q in model.module.parameters()]}, f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # neither process tears gloo down while the other still talks to it (that aborts sporadically)
    finally:
        dist.destroy_process_group()
    # Results are saved: skip interpreter finalisation, where gloo's threads may still hold tensors whose release
    # aborts the process now and then (SIGABRT, "terminate called without an active exception").
    os._exit(0)


@pytest.mark.parametrize("lamb", [1.0, 1.3])
def test_two_process_ddp_equals_one_process_on_union_batch(tmp_path, lamb):
    model = PairModel()
    loss, plain = iic_loss(*model(*union_batch()), lamb)
    loss.backward()
    mp.start_processes(worker, args=(2, free_port(), str(tmp_path), lamb), nprocs=2, join=True, start_method="spawn")
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
        assert result["plain"].item() == pytest.approx(plain.item(), rel=1e-5)
        for got, want in zip(result["grads"], [q.grad for q in model.parameters()]):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
