"""The CNN methods a learning curve sets beside hand-engineered features: a small CNN trained from scratch and a
pretrained backbone fine-tuned.

Each has ``fit(images, seed) -> self`` and ``score(images) -> accuracy`` (the methods that
:func:`convlab.learningcurves.learning_curve` compares, like :mod:`convlab.handfeatures`' classifiers) and records
its training budget after ``fit`` in ``budget_`` (``{"steps": ..., "epochs": ...}``): both train by a fixed number
of optimiser steps whatever the training-set size, so small sets are not under-trained and large ones stay
affordable on a CPU.

- :class:`SmallCNNClassifier`: a :class:`~convlab.smallcnn.SmallCNN` trained from scratch, random crops and mirrors.
- :class:`FineTuneClassifier`: a pretrained backbone with a new head, the first stages optionally frozen.

Methods read ``images.images`` (the raw uint8 photos) and apply their own preprocessing; an ImageSet's
``transform`` is not used.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import TensorDataset
from torchvision.transforms import v2

from convlab._checks import check_is_fitted
from convlab.augment import RandomCrop, RandomHorizontalFlip
from convlab.backbones import load_backbone
from convlab.data import ImageSet
from convlab.engine import evaluate, fit
from convlab.handfeatures import PerImageCache, square_batch
from convlab.preprocess import Preprocess
from convlab.smallcnn import SmallCNN
from convlab.transfer import freeze, param_groups

__all__ = ["SmallCNNClassifier", "FineTuneClassifier"]


def _cosine_decay(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate times ``(1 + cos(pi * step / steps)) / 2``: from the full rate down to 0 over ``steps``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))


class SmallCNNClassifier:
    """A :class:`~convlab.smallcnn.SmallCNN` trained from scratch by :func:`convlab.engine.fit` (AdamW, cosine decay,
    batches drawn with replacement; CPU friendly).

    Images are squared to ``size + pad`` px once; training takes random ``size`` crops and horizontal flips of
    them, testing the centre crop. ``steps`` optimiser steps of ``batch_size`` whatever the training-set size, so
    small sets are not under-trained; ``min_epochs`` raises the
    number of steps for large sets so they get at least that many passes over the data.
    """

    _MEAN, _STD = 0.5, 0.25

    def __init__(
        self,
        size: int = 64,
        pad: int = 8,
        steps: int = 120,
        batch_size: int = 32,
        lr: float = 3e-3,
        weight_decay: float = 5e-4,
        width: int = 16,
        min_epochs: float = 0.0,
    ):
        self.size, self.pad, self.steps, self.batch_size = size, pad, steps, batch_size
        self.min_epochs = min_epochs  # larger sets get more steps: at least this many passes over the data
        self.lr, self.weight_decay, self.width = lr, weight_decay, width
        self.name = f"small CNN from scratch ({size} px)"
        self._cache = PerImageCache(lambda ims: square_batch(ims, size + pad).numpy())

    def _inputs(self, images) -> torch.Tensor:
        return (torch.from_numpy(self._cache(list(images))) - self._MEAN) / self._STD

    def fit(self, images: ImageSet, seed: int = 0) -> SmallCNNClassifier:
        """Train from a fresh initialisation drawn with ``seed`` on an ImageSet; returns ``self``."""
        # Initialisation and dropout draw from the global generator: seed it here and restore it afterwards.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model_ = self._train(images, torch.Generator().manual_seed(seed))
        return self

    def _train(self, images, g: torch.Generator) -> SmallCNN:
        model = SmallCNN(len(images.classes), self.width)
        x, y = self._inputs(images.images), images.labels
        batch = min(self.batch_size, len(y))
        steps = max(self.steps, math.ceil(self.min_epochs * len(y) / self.batch_size))
        # one "epoch" of `steps` batches drawn with replacement, each cut and mirrored at random
        crop_flip = v2.Compose([RandomCrop(self.size, generator=g), RandomHorizontalFlip(0.5, generator=g)])
        self.budget_ = {"steps": steps, "epochs": round(steps * batch / len(y), 2)}
        fit(
            model,
            TensorDataset(x, y),
            epochs=1,
            batch_size=batch,
            order=lambda epoch: torch.randint(len(y), (steps * batch,), generator=g),
            transform=crop_flip,
            lr=self.lr,
            weight_decay=self.weight_decay,
            scheduler=_cosine_decay,
            seed=None,  # fit() runs inside our seeded fork of the global generator (dropout)
            device="cpu",
            channels_last=True,  # faster convolutions on the CPU (oneDNN)
            progress=False,
        )
        return model

    @torch.inference_mode()
    def predict(self, images: ImageSet) -> np.ndarray:
        """Class index per image of an ImageSet (centre crops)."""
        check_is_fitted(self, "model_", "call fit(train_images) before predict/score")
        p = self.pad // 2
        x = self._inputs(images.images)[:, :, p : p + self.size, p : p + self.size]
        return self.model_(x).argmax(1).numpy()

    def score(self, images) -> float:
        """Accuracy on an ImageSet."""
        return float((self.predict(images) == images.labels.numpy()).mean())


class FineTuneClassifier:
    """A pretrained backbone with a new head, fine-tuned with :func:`convlab.engine.fit` (mirror augmentation).

    The first ``frozen`` stages stay frozen (0 = everything trains, at ``backbone_lr_scale`` times the head's
    learning rate). Like :class:`SmallCNNClassifier` it takes ``steps`` optimiser steps whatever the training-set
    size, at ``size`` px, so tiny sets are not under-trained and large ones stay affordable on a CPU.
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v2",
        frozen: int = 0,
        size: int = 112,
        steps: int = 40,
        batch_size: int = 16,
        lr: float = 1e-3,
        backbone_lr_scale: float = 0.1,
        device: str = "auto",
    ):
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
        self.backbone, self.frozen, self.size, self.steps = backbone, frozen, size, steps
        self.batch_size, self.lr, self.backbone_lr_scale, self.device = batch_size, lr, backbone_lr_scale, device
        what = "fine-tuned" if frozen == 0 else f"first {frozen} stages frozen"
        self.name = f"{backbone} {what} ({size} px)"

    def fit(self, images: ImageSet, seed: int = 0) -> FineTuneClassifier:
        """Fine-tune a fresh copy of the pretrained backbone on an ImageSet; returns ``self``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the new head's initialisation
            model = load_backbone(self.backbone, num_classes=len(images.classes), categories=images.classes)
        if self.frozen:
            freeze(model, self.frozen)
        self.preprocess_ = Preprocess.from_spec(model.spec, size=self.size)
        # Preprocess once (resize, crop, normalise); per epoch only the mirror is drawn.
        data = torch.utils.data.TensorDataset(self.preprocess_(list(images.images)), images.labels)
        epochs = max(1, math.ceil(self.steps * self.batch_size / len(images)))
        flip = RandomHorizontalFlip(0.5)
        self.budget_ = {"steps": epochs * math.ceil(len(images) / self.batch_size), "epochs": epochs}
        groups = param_groups(model, self.lr, self.backbone_lr_scale)
        fit(
            model,
            data,
            epochs=epochs,
            batch_size=self.batch_size,
            param_groups=groups,
            transform=flip,
            seed=seed,
            device=self.device,
            progress=False,
        )
        self.model_ = model
        return self

    def score(self, images) -> float:
        """Accuracy on an ImageSet."""

        check_is_fitted(self, "model_", "call fit(train_images) before predict/score")
        return evaluate(self.model_, images, transform=self.preprocess_, device=self.device).accuracy
