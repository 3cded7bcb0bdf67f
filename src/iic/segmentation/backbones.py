"""A frozen pretrained network as the trunk of dense IIC: its feature maps at chosen strides, one map per pixel grid.

A network pretrained on ImageNet already tells sky from road from tree in its intermediate feature maps; a
segmentation head trained with the dense IIC loss on those maps (the insight behind STEGO and its successors)
segments scenes it has never seen far better than a network trained from pixels on a few hundred images.

The stages are picked by output stride (8: a map an eighth of the input's side): of the network's blocks, the last one
whose output has that stride. Each stage's map is L2-normalised per pixel, so that wide late stages do not drown the
early, finer ones, upsampled to the finest chosen stride's grid and concatenated. The network runs in eval mode with no
gradient, and stops after the last stage needed.
"""

import torch
import torch.nn.functional as F
from torch import nn

from iic.errors import IICError
from iic.vectors.features import FrozenBackbone, pretrained_backbone

PROBE_SIDE = 256  # the side of the blank image that measures each block's stride (a multiple of 32)


class _StagesDone(Exception):
    """Raised by the last stage's hook: the rest of the network is not needed."""


def candidate_blocks(network: nn.Module) -> list[tuple[str, nn.Module]]:
    """The network's blocks in order: its children, with sequences of blocks opened one level (ResNet's layer1…,
    torchvision's ``features``, EfficientNet-Lite's ``_blocks``)."""
    blocks = []
    for name, child in network.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) > 1:
            blocks += [(f"{name}.{index}", block) for index, block in child.named_children()]
        else:
            blocks.append((name, child))
    return blocks


def block_strides(network: nn.Module, forward) -> dict[str, int]:
    """Output stride of every block that outputs a feature map, measured on a blank PROBE_SIDE² image."""
    strides: dict[str, int] = {}
    hooks = []
    for name, block in candidate_blocks(network):
        def record(_module, _inputs, output, name=name):
            if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] > 1:  # not pooled
                strides[name] = round(PROBE_SIDE / output.shape[-1])
        hooks.append(block.register_forward_hook(record))
    try:
        with torch.inference_mode():
            forward(torch.zeros(1, 3, PROBE_SIDE, PROBE_SIDE))
    finally:
        for hook in hooks:
            hook.remove()
    return strides


class DenseBackbone(nn.Module):
    """Frozen pretrained network → n × C × h/s × w/s features (s the finest of ``strides``) of [0, 1] images."""

    def __init__(self, name: str, strides: tuple[int, ...] = (8, 16), frozen: FrozenBackbone | None = None):
        super().__init__()
        # Random weights unless a pretrained FrozenBackbone is given: a checkpoint's own state then fills them in.
        self.frozen = frozen if frozen is not None else FrozenBackbone(name, 224)
        self.name = self.frozen.name
        network = self.frozen.network
        available = block_strides(network, self._network_forward)
        chosen = {}
        for name_, stride in available.items():  # the last block at each stride
            chosen[stride] = name_
        missing = [s for s in strides if s not in chosen]
        if missing or not strides:
            raise IICError(f"backbone {self.name} has feature maps at strides {', '.join(map(str, sorted(chosen)))}; "
                           f"--feature-strides {' '.join(map(str, strides)) or '(none)'} asks for others")
        self.strides = tuple(sorted(set(strides)))
        self.stage_names = [chosen[s] for s in self.strides]
        blocks = dict(candidate_blocks(network))
        self._stages = [blocks[n] for n in self.stage_names]
        self.out_channels = sum(self._probe_channels())

    @property
    def stride(self) -> int:
        return self.strides[0]

    def train(self, mode: bool = True) -> "DenseBackbone":
        return super().train(False)  # frozen: BatchNorm keeps its pretrained statistics, whatever the module's mode

    def _network_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frozen.network(x)  # GoogLeNet's transform_input follows the loaded weights (FrozenBackbone)

    def _stage_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs: dict[int, torch.Tensor] = {}

        # An exported graph cannot stop by an exception: it runs on, and the exporter drops the unused rest.
        stop_early = not torch.compiler.is_exporting()

        def hook_for(index):
            def record(_module, _inputs, output):
                outputs[index] = output
                if stop_early and len(outputs) == len(self._stages):
                    raise _StagesDone
            return record

        hooks = [stage.register_forward_hook(hook_for(i)) for i, stage in enumerate(self._stages)]
        try:
            self._network_forward(x)
        except _StagesDone:
            pass
        finally:
            for hook in hooks:
                hook.remove()
        return [outputs[i] for i in range(len(self._stages))]

    def _probe_channels(self) -> list[int]:
        with torch.inference_mode():
            return [m.shape[1] for m in self._stage_maps(torch.zeros(1, 3, PROBE_SIDE, PROBE_SIDE))]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] float n × 3 × h × w (one channel is repeated) → float32 n × C × ⌈h/s⌉ × ⌈w/s⌉."""
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise IICError(f"backbone {self.name} takes colour (or grey) images, got {x.shape[1]} channels")
        x = ((x - self.frozen.mean) / self.frozen.std).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            maps = self._stage_maps(x)
            size = maps[0].shape[-2:]
            parts = [F.normalize(F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False)
                                 if m.shape[-2:] != size else m.float(), dim=1) for m in maps]
        return torch.cat(parts, dim=1).contiguous()


def pretrained_dense_backbone(name: str, weights: str = "DEFAULT", strides: tuple[int, ...] = (8, 16)) -> DenseBackbone:
    """``name`` with ``weights`` (see ``iic.vectors.features.pretrained_backbone``) as a dense trunk."""
    return DenseBackbone(name, strides, frozen=pretrained_backbone(name, weights, 224))
