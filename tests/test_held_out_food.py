"""The capstone's held-out photos: food groups no earlier notebook loads, split the same way on every call, and not
one of them a near-copy of a photo the course shows."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from convlab.data import FOOD_GROUPS, HELD_OUT_GROUPS, load_food, load_held_out_food

pytestmark = pytest.mark.slow


def _thumbnails(images) -> torch.Tensor:
    """32 x 32 area-averaged thumbnails in [0, 1], flattened: (N, 3072)."""
    return (
        torch.stack([F.interpolate(im[None].float(), size=(32, 32), mode="area")[0] for im in images]).flatten(1) / 255
    )


def test_held_out_groups_are_not_the_courses_and_the_split_is_fixed():
    course_groups = inspect.signature(load_food).parameters["groups"].default
    assert not set(HELD_OUT_GROUPS) & set(course_groups) and set(HELD_OUT_GROUPS) <= set(FOOD_GROUPS)
    a, b = load_held_out_food(), load_held_out_food()
    assert a.classes == tuple(FOOD_GROUPS[g] for g in HELD_OUT_GROUPS)
    for part in ("train", "val", "test"):
        assert getattr(a, part).fingerprint() == getattr(b, part).fingerprint(), part
    ids = [set(getattr(a, part).ids) for part in ("train", "val", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert all(name[0] in HELD_OUT_GROUPS for name in ids[2])
    assert len(a.test) >= 45 and min(torch.bincount(a.test.labels).tolist()) >= 5


def test_no_held_out_photo_is_a_near_copy_of_a_course_photo():
    held = load_held_out_food()
    course = load_food()
    mine = _thumbnails([*held.train.images, *held.val.images, *held.test.images])
    theirs = _thumbnails([*course.train.images, *course.val.images, *course.test.images])
    rms = torch.cdist(mine, theirs) / mine.shape[1] ** 0.5
    # same-photo copies differ by <= 0.001; the nearest distinct food photos are 0.078 apart (convlab.data)
    assert float(rms.min()) > 0.02, f"a held-out photo is a near-copy of a course photo (RMS {rms.min():.4f})"
