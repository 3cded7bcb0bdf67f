"""Distributed helpers, kept apart from the losses that use them."""

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from iic.errors import IICError


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, differentiably.

    The backward pass all-reduces the gradient too, so with DDP's gradient averaging the parameters
    receive exactly the gradient of the loss computed on the union of all processes' batches.
    Outside a process group this is the identity.
    """
    if not is_distributed():
        return tensor
    import warnings

    from torch.distributed.nn.functional import all_reduce

    # deprecated in favour of functional collectives, which have no autograd on all backends
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(tensor, op=dist.ReduceOp.SUM)


def check_shares(world_size: int, training: int, evaluation: int | None, at_least: int = 2) -> None:
    """Refuse data too small for every process to train on ``at_least`` images and evaluate at least one (None:
    nothing to evaluate); a process with no batch would skip the collectives the others wait in."""
    if training < at_least * world_size:
        raise IICError(f"{training} training images cannot be shared by {world_size} processes "
                       f"(at least {at_least} each)")
    if evaluation is not None and evaluation < world_size:
        raise IICError(f"{evaluation} evaluation images cannot be shared by {world_size} processes (at least 1 each)")


def evaluation_sampler(dataset: Dataset, world_size: int, rank: int) -> DistributedSampler | None:
    """This process's share of an evaluation set, every item in exactly one share (None on one process).

    Lightning's default for evaluation pads the shares to equal length with repeated items, which evaluation
    tables would count twice; the shares here differ by at most one item instead.
    """
    if world_size <= 1:
        return None
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler  # Lightning only where needed

    return UnrepeatedDistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Give every process rank ``src``'s buffers (BatchNorm running statistics), the ones its checkpoint saves.

    Each process's last training forward pass updates its running statistics with its own batch, so without
    this the processes would evaluate their shares with slightly different models. No-op on one process.
    """
    if not is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src)
