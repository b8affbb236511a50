"""Notebook 04 (lots of data: fine-tune everything): parameter groups, the regime decision, and the quiz.

- ``PARAM_GROUPS``: the learner builds optimizer parameter groups by hand (pretrained stages at a lower learning
  rate than the new head); the check runs them on a real MobileNetV2 with 0 and 4 frozen stages: every trainable
  parameter in exactly one group, no frozen one, the right learning rates, and an AdamW step on a real batch.
- ``CHOOSE_REGIME``: ``choose_regime(scenario) -> (regime, k)`` for the scenarios in :data:`SCENARIOS` (data-set
  size, measured similarity to ImageNet, compute); each wrong choice is answered with an explanation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convlab.exercises.core import Exercise, Question, Quiz, expect
from convlab.exercises.nb03 import fashion_batch

__all__ = [
    "PARAM_GROUPS",
    "CHOOSE_REGIME",
    "QUIZ",
    "Scenario",
    "SCENARIOS",
    "REGIMES",
    "make_param_groups_reference",
    "choose_regime_reference",
]


# --------------------------------------------------------------------------------------------- parameter groups
def make_param_groups_reference(model: nn.Module, lr: float, backbone_lr_scale: float) -> list[dict]:
    """One group per stage with trainable parameters at ``lr * backbone_lr_scale``, the head at ``lr``."""
    groups = []
    for name, stage in model.stages.named_children():
        params = [p for p in stage.parameters() if p.requires_grad]
        if params:
            groups.append({"params": params, "lr": lr * backbone_lr_scale, "name": name})
    groups.append({"params": [p for p in model.head.parameters() if p.requires_grad], "lr": lr, "name": "head"})
    return groups


def _test_param_groups(make_param_groups) -> None:
    from convlab.backbones import load_backbone
    from convlab.transfer import freeze

    lr, scale = 1e-3, 0.1
    for k in (0, 4):
        model = freeze(load_backbone("mobilenet_v2", num_classes=10), k)
        groups = make_param_groups(model, lr, scale)
        expect(
            isinstance(groups, list)
            and groups
            and all(isinstance(g, dict) and "params" in g and "lr" in g for g in groups),
            f"return a list of dicts, each with 'params' (a list of parameters) and 'lr', got {type(groups).__name__}",
        )
        seen = [id(p) for g in groups for p in g["params"]]
        expect(len(seen) == len(set(seen)), f"k={k}: a parameter appears in two groups; each must be in exactly one")
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        frozen = {id(p) for p in model.parameters() if not p.requires_grad}
        expect(
            not (set(seen) & frozen), f"k={k}: frozen parameters (requires_grad=False) do not belong in the optimizer"
        )
        missing = len(trainable - set(seen))
        expect(not missing, f"k={k}: {missing} trainable parameter tensors are in no group")
        head = {id(p) for p in model.head.parameters()}
        for g in groups:
            ids = {id(p) for p in g["params"]}
            want = lr if ids <= head else lr * scale
            expect(ids <= head or not (ids & head), f"k={k}: keep the head's parameters in a group of their own")
            expect(
                abs(float(g["lr"]) - want) <= 1e-12,
                f"k={k}: a group of {'head' if ids <= head else 'stage'} parameters "
                f"has lr {g['lr']}, expected {want:g}",
            )
        opt = torch.optim.AdamW(groups, lr=lr)
        before = model.head[-1].weight.detach().clone()
        x, y = fashion_batch()
        model.train()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        expect(not torch.equal(before, model.head[-1].weight), f"k={k}: an optimizer step did not move the head")


PARAM_GROUPS = Exercise(
    name="make_param_groups",
    test=_test_param_groups,
    reference=make_param_groups_reference,
    hints=[
        "Walk over model.stages: each stage with trainable parameters becomes one group at the lower rate; the head "
        "is its own group at the full rate. Leave out every parameter with requires_grad=False.",
        "The API: an optimizer takes a list of dicts, each {'params': [...], 'lr': ...}; p.requires_grad says "
        "whether a parameter trains; model.stages and model.head hold the backbone and the new layer.",
    ],
    skill="discriminative learning rates with optimizer parameter groups",
    handle="nb04.PARAM_GROUPS",
)


# --------------------------------------------------------------------------------------------- choosing a regime
REGIMES = ("head", "partial", "full")


@dataclass(frozen=True)
class Scenario:
    """A transfer problem: images per class, similarity to ImageNet (measured), and the compute at hand.

    ``similarity``: ``"close"`` or ``"far"``, from a stage probe (notebook 02): close when the last stage's probe
    accuracy beats every earlier stage, far when an earlier stage does. ``compute``: ``"cpu"`` (a laptop, an hour)
    or ``"gpu"`` (a GPU for a day).
    """

    name: str
    per_class: int
    similarity: str
    compute: str


@dataclass(frozen=True)
class _Answer:
    scenario: Scenario
    accept: tuple[tuple[str, tuple[int, ...]], ...]  # (regime, allowed k)
    why: str  # shown when the choice is wrong


SCENARIOS = (
    _Answer(
        Scenario("food photos, 10 per class", 10, "close", "cpu"),
        (("head", (7,)),),
        "10 images per class cannot re-learn millions of weights, and the last stage's features already suit "
        "photos like ImageNet's: a linear head on the last stage (regime 'head', k = 7).",
    ),
    _Answer(
        Scenario("Fashion-MNIST, 10 per class", 10, "far", "cpu"),
        (("head", (4, 5, 6)),),
        "little data AND far from ImageNet: too little to fine-tune, and the last stage is too ImageNet-specific "
        "(the stage probe measured an earlier stage beating it). Put the head on an earlier stage: "
        "('head', k) with k = 4..6 stages kept (CS231n's fourth case).",
    ),
    _Answer(
        Scenario("food photos, 100 per class", 100, "close", "cpu"),
        (("head", (7,)), ("partial", (5, 6))),
        "a few hundred images close to ImageNet: a head on the last stage, or fine-tune only the last stage or "
        "two (partial, k = 5 or 6); unfreezing more overfits and costs compute.",
    ),
    _Answer(
        Scenario("Fashion-MNIST, 5,000 per class, GPU", 5000, "far", "gpu"),
        (("full", (0,)), ("partial", (1, 2))),
        "lots of data far from ImageNet, and a GPU: fine-tune everything (or nearly: k <= 2); the late ImageNet "
        "features are the wrong ones, and 50,000 images can re-learn them.",
    ),
    _Answer(
        Scenario("food photos, 5,000 per class, GPU", 5000, "close", "gpu"),
        (("full", (0,)), ("partial", (1, 2, 3, 4))),
        "lots of data close to ImageNet: fine-tuning most or all stages gains a little more; keeping everything "
        "frozen wastes the data (Kornblith et al. 2019: fine-tuning beats fixed features on most data sets).",
    ),
    _Answer(
        Scenario("food photos, 5,000 per class, laptop CPU, one hour", 5000, "close", "cpu"),
        (("head", (7,)), ("partial", (5, 6))),
        "compute decides here: a full fine-tune of 15,000 photos at 224 px takes many hours on a laptop CPU, "
        "while cached features make a head (or the last stages) train in minutes, and the data are close to "
        "ImageNet, so little is lost.",
    ),
)


def choose_regime_reference(scenario: Scenario) -> tuple[str, int]:
    """The rule of thumb, made explicit: size first, then similarity, then compute."""
    if scenario.per_class <= 30:
        return ("head", 7) if scenario.similarity == "close" else ("head", 5)
    if scenario.compute == "cpu" or scenario.per_class < 1000:
        return ("head", 7) if scenario.similarity == "close" else ("partial", 5)
    return ("full", 0)


def _test_choose_regime(choose_regime) -> None:
    wrong = []
    for answer in SCENARIOS:
        got = choose_regime(answer.scenario)
        expect(
            isinstance(got, tuple) and len(got) == 2 and got[0] in REGIMES and isinstance(got[1], int),
            f"return a (regime, k) tuple with regime in {REGIMES} and k an int, got {got!r}",
        )
        if not any(got[0] == regime and got[1] in ks for regime, ks in answer.accept):
            wrong.append(
                f"- {answer.scenario.name} ({answer.scenario.similarity}, {answer.scenario.compute}): you chose "
                f"{got}; {answer.why}"
            )
    expect(not wrong, f"{len(wrong)} of {len(SCENARIOS)} scenarios chosen differently:\n" + "\n".join(wrong))


CHOOSE_REGIME = Exercise(
    name="choose_regime",
    test=_test_choose_regime,
    reference=choose_regime_reference,
    hints=[
        "Decide by size first (little data: only a head; lots: fine-tune), then by similarity (far: the last "
        "stage's features are the wrong ones), then by compute (a CPU cannot afford a full fine-tune of lots of data).",
        "Use scenario.per_class, scenario.similarity ('close'/'far') and scenario.compute ('cpu'/'gpu'); return e.g. "
        "('head', 7), ('head', 5) for a head on an earlier stage, ('partial', 5) or ('full', 0).",
    ],
    skill="choosing the transfer regime and k from data size, similarity and compute",
    handle="nb04.CHOOSE_REGIME",
)

QUIZ = Quiz(
    "Quiz: fine-tuning everything",
    {
        "q1": Question(
            "Why do pretrained stages get a lower learning rate than the new head?",
            options={
                "a": "the head starts random and must move far; the pretrained stages are already good and the "
                "head's early, large and noisy gradients would wreck them",
                "b": "lower learning rates make each step cheaper",
                "c": "BatchNorm requires it",
            },
            answer="a",
            why="Discriminative learning rates (ULMFiT's name) protect what pretraining learned while the head "
            "catches up.",
            wrong={
                "b": "a step costs the same at any learning rate.",
                "c": "BatchNorm does not care about the learning rate.",
            },
        ),
        "q2": Question(
            "With `lr = 1e-3` and `backbone_lr_scale = 0.1`, what learning rate does stage5 get?",
            answer=1e-4,
            tolerance=1e-9,
            why="lr x backbone_lr_scale = 1e-3 x 0.1 = 1e-4; the head keeps 1e-3.",
            wrong={
                "low": "multiply the head's rate by the scale once.",
                "high": "the stages get the scaled-down rate.",
            },
        ),
        "q3": Question(
            "Kornblith et al. (2019), 'Do better ImageNet models transfer better?': across 16 architectures and 12 "
            "data sets, what did they find for *fine-tuning*?",
            options={
                "a": "ImageNet accuracy and transfer accuracy were strongly correlated (though on some fine-grained "
                "sets, such as cars and aircraft, pretraining gave little over training from scratch)",
                "b": "no correlation at all",
                "c": "better ImageNet models always transferred worse",
            },
            answer="a",
            why="They report a strong correlation for fine-tuning and for fixed features, and that on some "
            "fine-grained data sets ImageNet pretraining gave little benefit over training from scratch.",
            wrong={
                "b": "the correlation was strong, for fine-tuning and for fixed features alike.",
                "c": "the opposite: better ImageNet models tended to transfer better.",
            },
        ),
        "q4": Question(
            "In this notebook's size-axis table, what differs between the rows of one regime?",
            options={
                "a": "only the number of training images per class (and with it the number of optimizer steps)",
                "b": "the data set",
                "c": "the input size",
            },
            answer="a",
            why="Every size is drawn from the same Fashion-MNIST pool, tested on the same test images per seed, at the "
            "same input size and learning rates: size is the only factor, so the table can show its effect.",
            wrong={
                "b": "one data set along the whole axis: that is the point (no size/data-set confound).",
                "c": "the input size is fixed by the configuration.",
            },
        ),
        "q5": Question(
            (
                "From your run: how many parameters are in your group with the highest learning rate (the table "
                "under your `make_param_groups`)?"
            ),
            answer=None,
            measured="fastest_group_params",
            why="The fastest group is the new head, which starts from random and has the most to learn.",
            wrong={
                "low": "sum the numel of every parameter in that group.",
                "high": "only the group with the highest learning rate.",
            },
        ),
        "q6": Question(
            "Fine-tuning everything at the head's learning rate (1e-3) on 10 images per class: the main risk?",
            options={
                "a": "large updates wreck the pretrained features while 100 images overfit the rest",
                "b": "training takes longer",
                "c": "none",
            },
            answer="a",
            why=(
                "Big steps on pretrained weights undo what ImageNet taught them, and 2.2 M weights fit 100 images "
                "perfectly: a low backbone rate and few epochs limit both."
            ),
            wrong={
                "b": "the cost per step is the same; the harm is to the weights.",
                "c": "the size axis shows what fine-tuning all costs on little data.",
            },
        ),
        "q7": Question(
            "Why train the new head alone for a few epochs before unfreezing the backbone?",
            options={
                "a": "BatchNorm requires it",
                "b": (
                    "a random head sends large, noisy gradients into the pretrained layers; a trained head "
                    "sends useful ones"
                ),
                "c": "it saves memory",
            },
            answer="b",
            why=(
                "Warm-up (fastai's fine_tune does it): the backbone's first gradients then carry the task, not the "
                "head's random initialisation."
            ),
            wrong={
                "a": "BatchNorm does not care.",
                "c": "memory is the same once the backbone is unfrozen.",
            },
        ),
        "q8": Question(
            (
                "Over 3 seeds, regime A scores 0.81, 0.84, 0.78 and regime B 0.83, 0.85, 0.80 on the same seeds "
                "and test set. The paired differences are +0.02, +0.01, +0.02 (95% interval about [0.002, 0.031]). "
                "What holds?"
            ),
            options={
                "a": "nothing can be said with 3 seeds",
                "b": "B is better, shown: the paired interval excludes zero",
                "c": "a tie: the two ranges overlap",
            },
            answer="b",
            why=(
                "Pairing removes what the seeds share (the split, the initialisation): the differences vary far "
                "less than the accuracies, and their interval excludes zero."
            ),
            wrong={
                "a": "3 paired seeds suffice when the differences vary this little.",
                "c": "comparing the two ranges ignores the pairing; the differences are consistently positive.",
            },
        ),
        "q9": Question(
            "Discriminative learning rates (ULMFiT, fastai) go further than two groups. What do they do?",
            options={
                "a": "a rate per training example",
                "b": "a learning rate per stage, smaller for earlier stages",
                "c": "a new rate every epoch",
            },
            answer="b",
            why=(
                "Earlier stages are more generic and need less change, so each stage gets a rate that grows "
                "towards the head."
            ),
            wrong={
                "a": "rates are set per parameter group, not per example.",
                "c": "that is a schedule, a separate idea.",
            },
        ),
    },
    research=[
        (
            "Fine-tune at 100 images per class with backbone_lr_scale 1.0, 0.1 and 0.01 over 3 seeds: which wins, "
            "and is the difference shown by the paired interval?"
        ),
        (
            "Read Kornblith et al. (2019), 'Do better ImageNet models transfer better?': on which data sets did "
            "fine-tuning barely beat training from scratch, and why?"
        ),
    ],
)
