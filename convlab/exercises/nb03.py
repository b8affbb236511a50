"""Notebook 03 (more data: freeze only the first k stages): freezing by hand, BatchNorm included, and the quiz.

The check builds a real MobileNetV2 with a 10-way head, puts it in ``train()`` mode, calls the learner's
``freeze_first_k(model, k)`` and takes ONE optimizer step (plain SGD) on a real Fashion-MNIST batch, then verifies
that exactly the right tensors changed: no parameter and no BatchNorm running statistic of the first ``k`` stages,
every parameter of the later stages and the head, and the running statistics of the trainable stages (they must
still be in train mode).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from convlab.exercises.core import Exercise, Question, Quiz, expect

__all__ = ["FREEZE_FIRST_K", "QUIZ", "fashion_batch", "freeze_first_k_reference", "one_step_changes"]


def freeze_first_k_reference(model: nn.Module, k: int) -> list[nn.Parameter]:
    """Freeze ``model.stages[:k]`` (weights AND BatchNorm statistics); return the parameters left to train."""
    for i, stage in enumerate(model.stages):
        frozen = i < k
        for p in stage.parameters():
            p.requires_grad_(not frozen)
        stage.train(not frozen and model.training)  # eval mode: BatchNorm uses, and keeps, its running statistics
    for p in model.head.parameters():
        p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


@functools.lru_cache(maxsize=1)
def fashion_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Eight real Fashion-MNIST training images at 32 px, normalised for MobileNetV2, and their labels (cached)."""
    from convlab.backbones import BACKBONES
    from convlab.data import load_fashion_mnist
    from convlab.transfer import Preprocess

    splits = load_fashion_mnist(train_per_class=2, val_per_class=1, test_per_class=1, seed=0)
    prep = Preprocess.from_spec(BACKBONES["mobilenet_v2"], size=32, crop=False)
    return prep(splits.train.images), splits.train.labels


def one_step_changes(freeze_fn, k: int, lr: float = 0.5) -> dict:
    """Run ``freeze_fn(model, k)`` after ``model.train()`` and one SGD step; report which tensors changed."""
    from convlab.backbones import load_backbone

    model = load_backbone("mobilenet_v2", num_classes=10)
    model.train()
    params = freeze_fn(model, k)
    expect(
        isinstance(params, (list, tuple)) and all(isinstance(p, nn.Parameter) for p in params),
        f"return the list of parameters to train (nn.Parameter objects), got {type(params).__name__}",
    )
    before = {name: t.detach().clone() for name, t in model.state_dict().items()}
    opt = torch.optim.SGD(params, lr=lr)
    x, y = fashion_batch()
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {
        "changed": changed,
        "names": set(before),
        "trainable": trainable,
        "returned": {id(p) for p in params},
        "ids": {name: id(p) for name, p in model.named_parameters()},
    }


def _frozen_prefixes(k: int) -> tuple[str, ...]:
    from convlab.backbones import BACKBONES

    return tuple(f"stages.{name}." for name in BACKBONES["mobilenet_v2"].stage_names[:k])


def _test_freeze_first_k(freeze_first_k) -> None:
    for k in (3, 5):
        r = one_step_changes(freeze_first_k, k)
        frozen = _frozen_prefixes(k)

        def is_frozen(name: str, frozen: tuple[str, ...] = frozen) -> bool:  # used only in this round
            return name.startswith(frozen)

        params = set(r["ids"])
        moved_weights = sorted(n for n in r["changed"] & params if is_frozen(n))
        expect(
            not moved_weights,
            f"k={k}: weights of frozen stages changed after one step, e.g. {moved_weights[:2]}: "
            "set requires_grad=False on every parameter of the first k stages",
        )
        want = {r["ids"][n] for n in params if not is_frozen(n)}
        expect(
            r["returned"] == want,
            f"k={k}: return exactly the parameters of stages k.. and of the head "
            f"({len(want)} tensors), got {len(r['returned'])}",
        )
        stats = {n for n in r["names"] - params if n.endswith(("running_mean", "running_var"))}
        drifted = sorted(n for n in stats & r["changed"] if is_frozen(n))
        expect(
            not drifted,
            f"k={k}: BatchNorm running statistics of frozen stages moved, e.g. {drifted[0] if drifted else ''}: "
            "requires_grad=False does not stop them; put the frozen stages in eval mode",
        )
        still = sorted(n for n in stats - r["changed"] if not is_frozen(n))
        expect(
            not still,
            f"k={k}: running statistics of trainable stages did not update, e.g. {still[0] if still else ''}: "
            "stages from k on must stay in train mode (do not call model.eval())",
        )
        idle = sorted(n for n in params if not is_frozen(n) and n not in r["changed"])
        expect(
            not idle, f"k={k}: trainable parameters did not change after a step, e.g. {idle[:2]}: leave them trainable"
        )


FREEZE_FIRST_K = Exercise(
    name="freeze_first_k",
    test=_test_freeze_first_k,
    reference=freeze_first_k_reference,
    hints=[
        "Two things freeze a stage: its parameters get no gradient (requires_grad False), and its BatchNorm layers "
        "stop updating running statistics (the stage in eval mode). Later stages and the head: the opposite.",
        "The API: model.stages is a Sequential you can enumerate; Tensor.requires_grad_(flag) and Module.train(flag) "
        "(False means eval mode) set the two switches; Module.parameters() lists what to return.",
    ],
    skill="freezing the first k stages by hand, BatchNorm statistics included",
    handle="nb03.FREEZE_FIRST_K",
)

QUIZ = Quiz(
    "Quiz: freezing the first k stages",
    {
        "q1": Question(
            "You froze the first 3 stages by hand (requires_grad=False, stages in eval mode) and then, at the start of "
            "the next epoch, call `model.train()`. What happens to those stages' BatchNorm layers?",
            options={
                "a": "they stay in eval mode",
                "b": "they go back to train mode and their running statistics move again",
                "c": "they lose their weights",
            },
            answer="b",
            why="model.train() sets every sub-module to train mode. Re-freeze after it (call your function each "
            "epoch), or override the stages' train() as convlab's freeze(bn='frozen') does.",
            wrong={
                "a": "train() is recursive: it reaches every sub-module, frozen or not.",
                "c": "modes never touch weights; only the running statistics start to drift.",
            },
        ),
        "q2": Question(
            "MobileNetV2's stem and stage1 hold well under 1% of its parameters. Why does unfreezing them still make "
            "an epoch much slower?",
            options={
                "a": "they run at the highest resolution, so their forward and backward passes cost the most compute",
                "b": "their weights are stored in float64",
                "c": "they have more BatchNorm layers",
            },
            answer="a",
            why="Compute scales with the spatial size of the activations; parameters do not. Unfrozen, they also need "
            "a backward pass and can no longer be cached.",
            wrong={"b": "every weight is float32.", "c": "every stage has BatchNorm; the cost is the resolution."},
        ),
        "q3": Question(
            "Why may the activations at the freeze boundary be cached only when the frozen stages' BatchNorm is "
            "frozen?",
            options={
                "a": "otherwise the frozen part computes a different function after every batch (its statistics move), "
                "so yesterday's cached activations are wrong today",
                "b": "caching needs float16",
                "c": "BatchNorm cannot run in eval mode",
            },
            answer="a",
            why="A cache stores f(x); it is valid only while f is fixed. With bn='train' the frozen stages' statistics "
            "adapt, so convlab recomputes them instead.",
            wrong={"b": "the dtype is a separate choice.", "c": "eval mode is exactly what frozen BatchNorm uses."},
        ),
        "q4": Question(
            "Yosinski et al. (2014) transferred the first n layers of a network trained on one half of ImageNet to the "
            "other half. When they *froze* the transferred layers and trained the rest, what happened as n grew into "
            "the upper layers?",
            options={
                "a": "accuracy rose steadily",
                "b": "accuracy dropped: upper layers are specific to the original task "
                "(and co-adapted neighbours were split)",
                "c": "nothing changed",
            },
            answer="b",
            why="Their frozen-transfer curve falls for upper layers; fine-tuning the transferred layers removed the "
            "drop and even beat training from scratch.",
            wrong={
                "a": "the generic-to-specific transition makes frozen upper layers hurt.",
                "c": "the drop was clear.",
            },
        ),
        "q5": Question(
            (
                "From your run: how many parameters did your `freeze_first_k` leave trainable at k = K_SHOW (the "
                "line printed under it)?"
            ),
            answer=None,
            measured="trainable_k",
            rel_tolerance=0.001,
            why=(
                "The trainable count falls slowly as k grows because the early stages hold few parameters: "
                "freezing them saves compute and memory for activations more than parameters."
            ),
            wrong={
                "low": "count the parameters of the list your function returned.",
                "high": "count only the parameters your function returned (requires_grad True).",
            },
        ),
        "q6": Question(
            "You cache the activations at the freeze boundary. What happens to the time per epoch as k grows?",
            options={
                "a": "it stays the same",
                "b": "it drops: the frozen stages run once, not every epoch",
                "c": "it grows",
            },
            answer="b",
            why="With the boundary cached, an epoch runs only the trainable stages: forward and backward.",
            wrong={
                "a": "the frozen stages' forward passes are no longer repeated each epoch.",
                "c": "freezing removes work; it adds none.",
            },
        ),
        "q7": Question(
            "Which stages are the ones to freeze, and why?",
            options={
                "a": "the first ones: their features (edges, colours, textures) are generic across tasks",
                "b": "the last ones: they hold the most parameters",
                "c": "any: each stage is equally specific",
            },
            answer="a",
            why=(
                "Generality falls with depth (Yosinski et al. 2014): the first stages transfer almost unchanged, "
                "the last are specific to ImageNet's classes."
            ),
            wrong={
                "b": "the last stages are the most specific to ImageNet: they are the ones to retrain.",
                "c": "early features are generic, late ones specific.",
            },
        ),
        "q8": Question(
            (
                "You give the optimiser only the trainable parameters. What does AdamW's weight decay do to the "
                "frozen weights?"
            ),
            options={
                "a": "resets them to zero",
                "b": "nothing: the optimiser never sees them",
                "c": "shrinks them a little each step",
            },
            answer="b",
            why=(
                "Weight decay is applied by the optimiser to the parameters it holds; the frozen ones are not "
                "among them. (Passing them with requires_grad=False also skips them: they get no gradient.)"
            ),
            wrong={
                "a": "nothing resets them.",
                "c": "only parameters given to the optimiser decay.",
            },
        ),
        "q9": Question(
            "100 images per class, data close to ImageNet: what does the seminar's rule suggest?",
            options={
                "a": "freeze the early stages, fine-tune the last few and the head",
                "b": "fine-tune everything from the first layer",
                "c": "train the network from scratch",
            },
            answer="a",
            why=(
                "More data than a head needs, too little to re-learn everything: unfreeze from the top down, as "
                "far as the data carries."
            ),
            wrong={
                "b": ("100 images per class rarely carry the whole network; that is the regime for lots of data."),
                "c": "from scratch wastes the pretrained features and needs far more data.",
            },
        ),
    },
    research=[
        (
            "Plot test accuracy against k at 10, 100 and 1,000 images per class: where does the best k move as "
            "data grows?"
        ),
        (
            "Freeze with requires_grad only (BatchNorm left in train mode) and compare with a proper freeze: how "
            "much does the statistics' drift cost?"
        ),
    ],
)
