"""Under a process group the dense loss equals the loss on the union of all processes' batches."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from iic import dense_iic_loss

pytestmark = pytest.mark.slow  # trains, or runs the iic command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 3, 10, 12, generator=generator)
    p_tf = torch.randn(4, 3, 10, 12, generator=generator).softmax(1)
    mask = torch.rand(4, 10, 12, generator=generator) > 0.2
    return logits, p_tf, mask


def worker(rank, world_size, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        logits, p_tf, mask = batch()
        share = slice(2 * rank, 2 * rank + 2)
        mine = logits[share].clone().requires_grad_()
        loss, _ = dense_iic_loss(mine.softmax(1), p_tf[share], mask[share], T=2, lamb=1.2)
        loss.backward()
        results[rank] = (loss.item(), mine.grad.clone())
        dist.barrier()  # neither process tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()
    # Results are saved: skip interpreter finalisation, where gloo's threads may still hold tensors whose release
    # aborts the process now and then (SIGABRT, "terminate called without an active exception").
    os._exit(0)


def test_two_processes_match_one_process_on_the_whole_batch():
    logits, p_tf, mask = batch()
    whole = logits.clone().requires_grad_()
    loss, _ = dense_iic_loss(whole.softmax(1), p_tf, mask, T=2, lamb=1.2)
    loss.backward()

    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(worker, args=(2, free_port(), results), nprocs=2, join=True)
    for rank in range(2):
        rank_loss, rank_grad = results[rank]
        assert abs(rank_loss - loss.item()) < 1e-5
        # Each process's gradient is the whole-batch gradient of its own samples (DDP then averages
        # parameter gradients, which is why all_reduce_sum sums the backward pass too).
        torch.testing.assert_close(rank_grad / 2, whole.grad[2 * rank:2 * rank + 2], rtol=1e-3, atol=1e-7)
