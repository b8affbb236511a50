"""The per-transform augmentation study: re-splitting, on-the-fly augmentation, determinism, honest verdicts."""

from __future__ import annotations

import pytest
import torch

from convlab import augstudy
from convlab.augstudy import (
    COLOUR,
    GEOMETRY,
    TRANSFORMS,
    Run,
    StudyConfig,
    TransformStudy,
    make_augment,
    resplit,
    train_once,
    transform_study,
)
from convlab.data import ImageSet, Splits, stratified_split

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = StudyConfig(frame=(12, 20), size=(10, 16), width=4, epochs=2, batch_size=8, seeds=(0, 1))


@pytest.fixture(scope="module")
def splits() -> Splits:
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 36, 44 + i % 2), dtype=torch.uint8, generator=g) for i in range(15)]
    full = ImageSet(images, [i % 3 for i in range(15)], ("a", "b", "c"), [f"img{i:02d}" for i in range(15)])
    train, val, test = (full.subset(idx) for idx in stratified_split(full.labels, (0.6, 0.2, 0.2), 0))
    return Splits(train, val, test, full.classes, 0)


def test_resplit_equals_splitting_the_pool_with_that_seed(splits):
    again = resplit(splits, 0)
    assert again.train.ids == splits.train.ids and again.test.ids == splits.test.ids
    other = resplit(splits, 1, (0.6, 0.0, 0.4))
    assert sorted(other.train.ids + other.test.ids) == [f"img{i:02d}" for i in range(15)] and len(other.val) == 0
    for s in (other.train, other.test):
        for i, y in zip(s.ids, s.labels):
            assert int(y) == int(i[3:]) % 3


def test_resplit_rejects_duplicate_ids(splits):
    dup = Splits(splits.train, splits.train, splits.test, splits.classes, 0)
    with pytest.raises(ValueError, match="unique"):
        resplit(dup, 1)


def test_every_listed_transform_is_registered_and_the_split_covers_all():
    assert set(GEOMETRY) | set(COLOUR) == set(TRANSFORMS)
    assert GEOMETRY[0] == COLOUR[0] == "none" and augstudy.RECOMMENDED in COLOUR


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_augment_is_per_sample_seeded_and_returns_the_input_size(name):
    frames = torch.randint(0, 256, (6, 3, 12, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    frames[3:] = frames[0]  # identical images must still get different draws
    a = make_augment(name, torch.Generator().manual_seed(0), frames, (10, 16))
    b = make_augment(name, torch.Generator().manual_seed(0), frames, (10, 16))
    out = a(frames)
    assert out.shape == (6, 3, 10, 16) and out.dtype == torch.uint8
    assert torch.equal(out, b(frames))  # the same seed, the same draws
    if name == "none":
        assert torch.equal(out, frames[..., 1:11, 2:18])  # the centre view
        assert torch.equal(a(frames), out)
    else:
        second = a(frames)  # a fresh draw on the next call (next epoch)
        assert not torch.equal(second, out) or name == "mirror"
        if name != "mirror":
            assert len({out[i].numpy().tobytes() for i in range(3, 6)}) > 1, "identical images, different draws"


def test_unknown_transform_and_bad_names_are_refused(splits):
    with pytest.raises(ValueError, match="expected one of"):
        make_augment("jitter", torch.Generator(), torch.zeros(1, 3, 12, 20, dtype=torch.uint8), (10, 16))
    with pytest.raises(ValueError, match="'none' first"):
        transform_study(splits, ["mirror"], TINY, progress=False)
    with pytest.raises(ValueError, match="unknown"):
        transform_study(splits, ["none", "jitter"], TINY, progress=False)
    with pytest.raises(ValueError, match="scale"):
        transform_study(splits, ["none"], "huge", progress=False)
    with pytest.raises(ValueError, match="frame"):
        StudyConfig(frame=(8, 8), size=(10, 10))


def test_training_is_deterministic_per_seed(splits):
    sp = resplit(splits, 0, (0.6, 0.0, 0.4))
    tr = augstudy.frames(sp.train.images, TINY.frame)
    te = augstudy.frames(sp.test.images, TINY.frame)
    runs = [train_once("PCA colour", tr, sp.train.labels, te, sp.test.labels, 3, 0, TINY) for _ in range(2)]
    assert runs[0] == runs[1] and 0.0 <= runs[0] <= 1.0


def test_study_pairs_runs_per_seed(splits):
    st = transform_study(splits, ["none", "mirror", "crop"], TINY, progress=False)
    assert [(r.transform, r.seed) for r in st.runs] == [(n, s) for s in (0, 1) for n in ("none", "mirror", "crop")]
    rows = st.rows()
    assert [r.transform for r in rows] == ["none", "mirror", "crop"] and rows[0].verdict == "baseline"
    assert rows[1].effect_mean == pytest.approx(sum(st.effects("mirror")) / 2)
    assert st.train_images + st.test_images == 15
    assert any("effect" in line for line in st.claims())
    import matplotlib.pyplot as plt

    plt.close(st.plot())


def _study(pairs):
    runs = [Run(n, s, a) for s, (x, y) in enumerate(pairs) for n, a in (("none", x), ("mirror", y))]
    return TransformStudy(runs, StudyConfig(seeds=tuple(range(len(pairs)))), "small", 100, 50)


def test_verdict_is_the_paired_interval_rule_and_a_tie_is_a_tie():
    assert _study([(0.80, 0.82), (0.90, 0.88), (0.70, 0.74)]).rows()[1].verdict == "tie"
    assert _study([(0.80, 0.90), (0.81, 0.92), (0.79, 0.90)]).rows()[1].verdict == "better"
    assert _study([(0.80, 0.70), (0.81, 0.72), (0.79, 0.70)]).rows()[1].verdict == "worse"
    row = _study([(0.80, 0.90), (0.81, 0.92), (0.79, 0.90)]).rows()[1]
    assert row.ci_low > 0 and row.ci_low < row.effect_mean < row.ci_high
    claims = _study([(0.80, 0.82), (0.90, 0.88), (0.70, 0.74)]).claims()
    assert "No transform's interval excludes zero" in claims[-1] and "Resolution of this run" in claims[-2]


def test_stored_study_round_trips_and_says_it_is_stored(tmp_path):
    runs = [
        Run(n, s, 0.5 + 0.01 * s + (0.05 if n == "crop" else 0.0))
        for s in (0, 1, 2)
        for n in ("none", "crop", "mirror")
    ]
    study = TransformStudy(runs, StudyConfig(), "full", 10, 20, 3.0, {"none": 1.0, "crop": 1.0, "mirror": 1.0})
    path = study.to_json(tmp_path / "study.json", date="2026-01-01", device="cpu", command="transform_study(...)")
    back = TransformStudy.from_json(path)
    assert back.config == study.config and back.rows() == study.rows() and back.runs == study.runs
    assert back.claims()[0].startswith("STORED run") and "2026-01-01" in back.claims()[0]
    assert not study.claims()[0].startswith("STORED")
    crop = back.select(["none", "crop"])
    assert crop.transforms == ["none", "crop"] and crop.rows()[1] == back.rows()[1]
    with pytest.raises(ValueError, match="names"):
        back.select(["crop"])
    with pytest.raises(ValueError, match="names"):
        back.select(["none", "rotation"])
