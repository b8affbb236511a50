"""The ensembles-and-crops study: its views are the ten crops and the dense evaluation, its configurations average
the right members and views, and a small run through the command line stores what the notebook reads."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from convlab import ensemblestudy as es
from convlab.augregimes import MEAN, STD
from convlab.smallcnn import SmallCNN

pytestmark = pytest.mark.usefixtures("one_thread")


def _frames(n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 32, 32), generator=g, dtype=torch.uint8)


def test_a_members_views_are_torchvisions_ten_crops_then_the_whole_frame_and_its_mirror():
    torch.manual_seed(0)
    model = SmallCNN(10, 4, depth=3, dropout=0.0, in_channels=1).eval()
    frames = _frames()
    got = es.view_logits(model, frames, chunk=7)
    assert got.shape == (6, 12, 10)
    x = (frames.float() / 255 - MEAN[0]) / STD[0]
    with torch.no_grad():
        for v, crop in enumerate(TF.ten_crop(x, [28, 28])):
            torch.testing.assert_close(got[:, v], model(crop), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[:, 10], model(x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[:, 11], model(x.flip(-1)), atol=1e-4, rtol=1e-4)
    assert es.VIEWS["1 crop"] == (4,) and es.VIEWS["2 crops"] == (4, 9)  # the centre crop and its mirror


def test_a_configuration_averages_the_softmax_of_its_members_and_views_over_cyclic_groups():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 50, 12, 4, generator=g) * 3
    labels = torch.randint(0, 4, (50,), generator=g)
    probs = es.combine(logits, [0, 2], (4, 9))
    torch.testing.assert_close(probs, logits[[0, 2]][:, :, [4, 9]].softmax(-1).mean((0, 2)))

    def acc(members, views):
        return float((es.combine(logits, members, views).argmax(-1) == labels).float().mean())

    two = es.config_accuracy(logits, labels, 2, "1 crop")
    assert two == pytest.approx((acc([0, 1], [4]) + acc([1, 2], [4]) + acc([2, 0], [4])) / 3)
    assert es.config_accuracy(logits, labels, 3, "dense") == pytest.approx(acc([0, 1, 2], [10, 11]))
    assert es.config_accuracy(logits, labels, 1, "10 crops") == pytest.approx(
        sum(acc([j], range(10)) for j in range(3)) / 3
    )
    with pytest.raises(ValueError, match="models: expected 1 to 3"):
        es.config_accuracy(logits, labels, 5, "1 crop")
    with pytest.raises(ValueError, match="logits: expected an"):
        es.combine(logits[0], [0], [0])
    assert es.forwards(5, "10 crops") == 50 and es.forwards(1, "dense") == 2
    assert es.config_name(1, "10 crops") == "1 model x 10 crops" and es.config_name(5, "dense") == "5 models x dense"


def test_a_small_study_through_the_command_line_stores_members_configurations_and_verdicts(tmp_path):
    from convlab.__main__ import main

    out = tmp_path / "ens.json"
    assert main(["study", "ensembles", "--scale", "small", "--out", str(out), "--threads", "1"]) == 0
    stored = json.loads(out.read_text())
    assert stored["study"] == "ensembles" and stored["meta"]["seconds"] > 0
    assert [(r["recipe"], r["replication"]) for r in stored["rows"]] == [
        (j["recipe"], j["replication"]) for j in es.jobs("small")
    ]
    study = es.EnsembleStudy.from_json(out)
    crop = [r for r in study.rows if r["recipe"] == "crop"]
    plain = [r for r in study.rows if r["recipe"] == "plain"]
    assert all(len(r["members"]) == es.MEMBERS for r in crop) and all(len(r["members"]) == 1 for r in plain)
    for r in study.rows:
        assert r["test_images"] == 10 * es.SCALES["small"]["test_per_class"]
        for m in r["members"]:
            assert 0 <= m["train_acc"] <= 1 and 0 <= m["test_acc"] <= 1 and m["epochs"] >= 1 and m["steps"] >= 1
        # one member, centre crop: the mean of the members' own centre-crop accuracies
        assert r["acc"]["1 model x 1 crop"] == pytest.approx(
            sum(m["test_acc"] for m in r["members"]) / len(r["members"])
        )
    assert set(crop[0]["acc"]) == {es.config_name(*c) for c in es.CONFIGS}
    assert crop[0]["forwards"]["5 models x 10 crops"] == 50
    assert set(plain[0]["acc"]) == {es.config_name(k, v) for k, v in es.CONFIGS if k == 1}
    cis = study.comparisons()
    assert len(cis) == 15 and all(ci.n == 2 for ci in cis)
    diff = study.trained_distribution()
    gain = [c["acc"]["1 model x 10 crops"] - c["acc"]["1 model x 1 crop"] for c in crop]
    plain_gain = [p["acc"]["1 model x 10 crops"] - p["acc"]["1 model x 1 crop"] for p in plain]
    assert diff.diffs == pytest.approx(tuple(a - b for a, b in zip(gain, plain_gain)))
    assert len(study.table()) == len(es.CONFIGS) and len(study.fit_table()) == 2
    claims = "\n".join(study.claims())
    assert "STORED run" in claims and "Cost for gain" in claims and "Dense evaluation" in claims
    # started again, it has every run and trains nothing
    assert main(["study", "ensembles", "--scale", "small", "--out", str(out), "--threads", "1"]) == 0
    assert json.loads(out.read_text())["rows"] == stored["rows"]


def test_unknown_scales_are_refused_by_name():
    with pytest.raises(ValueError, match="scale: expected one of"):
        es.jobs("huge")
