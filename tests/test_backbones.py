"""Backbones: named stages, shapes, the regrouping is faithful, real predictions on labelled ImageNet photos."""

from __future__ import annotations

import pytest
import torch

from convlab import imagenet_samples, load_backbone, sample_photos
from convlab.backbones import BACKBONES

NAMES = ["mobilenet_v2", "efficientnet_lite0"]


@pytest.fixture(scope="module")
def samples():
    return imagenet_samples()


@pytest.mark.parametrize("name", NAMES)
def test_stage_names_shapes_and_spec(name):
    model = load_backbone(name)
    spec = model.spec
    assert spec.stage_names == ("stem", "stage1", "stage2", "stage3", "stage4", "stage5", "conv_head")
    assert [n for n, _ in model.stages.named_children()] == list(spec.stage_names)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        for k, info in enumerate(spec.stages, start=1):
            y = model.stages[:k](x)
            assert y.shape == (2, info.num_chs, 64 // info.reduction, 64 // info.reduction)
        assert model.forward_features(x).shape == (2, spec.feature_dim)
        assert model(x).shape == (2, 1000) and len(model.categories) == 1000
    assert spec.num_params == sum(p.numel() for p in model.parameters())
    assert spec.weights_licence and spec.code_licence
    assert spec.weights_sha256 and spec.provenance and spec.imagenet_top1 > 70


def test_regrouped_mobilenet_matches_torchvision_exactly():
    from torchvision.models import mobilenet_v2

    from convlab.assets import asset_path

    ref = mobilenet_v2()
    ref.load_state_dict(torch.load(asset_path("mobilenet_v2"), weights_only=True))
    ref.eval()
    ours = load_backbone("mobilenet_v2")
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)


def test_regrouped_efficientnet_matches_original_exactly():
    from efficientnet_lite_pytorch import EfficientNet

    from convlab.assets import asset_path

    ref = EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(asset_path("efficientnet_lite0"), weights_only=True))
    ref.eval()
    ours = load_backbone("efficientnet_lite0")
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name, at_least", [("mobilenet_v2", 17), ("efficientnet_lite0", 16)])
def test_real_top1_on_labelled_imagenet_photos(name, at_least, samples):
    preds = load_backbone(name).predict(samples.images, k=5)
    top1 = sum(p.indices[0] == int(y) for p, y in zip(preds, samples.labels))
    top5 = sum(int(y) in p.indices for p, y in zip(preds, samples.labels))
    assert top1 >= at_least, f"{name}: top-1 {top1}/20"
    assert top5 >= 19


def test_known_photo_predictions():
    photos = sample_photos()
    preds = load_backbone("mobilenet_v2").predict([photos["chelsea"], photos["coffee"]], k=5)
    assert "cat" in preds[0].labels[0].lower()
    assert preds[1].labels[0] == "espresso" and preds[1].probs[0] > 0.5
    assert all(0 < sum(p.probs) <= 1 + 1e-6 for p in preds)  # the top 5 of a softmax over 1000 classes
    assert list(preds[0].probs) == sorted(preds[0].probs, reverse=True)
    assert all(len(p.labels) == len(p.probs) == 5 for p in preds)


def test_reset_classifier_keeps_backbone_and_names_classes():
    model = load_backbone("mobilenet_v2")
    before = {k: v.clone() for k, v in model.stages.state_dict().items()}
    model.reset_classifier(3, ["fruits", "other_vegetables", "marine_fish"])
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 3)
    assert model.categories == ("fruits", "other_vegetables", "marine_fish")
    for k, v in model.stages.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(0)
    with pytest.raises(ValueError, match="categories"):
        model.reset_classifier(2, ["a"])


def test_the_spec_names_the_new_head_classes():
    model = load_backbone("mobilenet_v2", num_classes=2, categories=["cats", "dogs"])
    assert model.spec.categories == model.categories == ("cats", "dogs")
    assert len(BACKBONES["mobilenet_v2"].categories) == 0, "the registry's spec is never changed"


def test_seeded_head_initialisation_leaves_the_global_generator_alone():
    model = load_backbone("mobilenet_v2")
    state = torch.get_rng_state()
    a = model.reset_classifier(3, seed=7).weight.clone()
    assert torch.equal(torch.get_rng_state(), state)
    b = model.reset_classifier(3, seed=7).weight
    assert torch.equal(a, b) and not torch.equal(a, model.reset_classifier(3, seed=8).weight)


def test_one_record_per_weights_file():
    """The asset, the spec and the command line all read one weights record; top-1 and the hash are written once."""
    from convlab.assets import ASSETS
    from convlab.backbones import imagenet_categories
    from convlab.cli import options as cli
    from convlab.weights import WEIGHTS

    assert set(cli.BACKBONE_NAMES) == set(BACKBONES) == set(NAMES) == set(WEIGHTS)
    for name, spec in BACKBONES.items():
        record = WEIGHTS[name]
        assert spec.record is record and spec.name == spec.weights_asset == name and callable(spec.build)
        assert spec.num_stages == len(spec.stages) == len(record.stages)
        asset = ASSETS[name]
        assert spec.weights is asset and spec.weights_sha256 == asset.sha256 == record.sha256
        assert asset.licence == spec.weights_licence == record.licence
        assert f"top-1 {spec.imagenet_top1}" in asset.description
        assert spec.eval_preprocess().resize == record.resize_size and spec.eval_preprocess().mean == record.mean
        assert len(imagenet_categories(name)) == 1000
    with pytest.raises(ValueError, match="name: expected one of"):
        imagenet_categories("resnet50")


@pytest.mark.parametrize("name", NAMES)
def test_each_stage_holds_the_modules_its_record_names(name):
    """A stage's state equals the original network's state under the stage's module paths, in order."""
    from convlab.assets import load_asset_weights

    state = load_asset_weights(name)
    model = load_backbone(name)
    for info in model.spec.stages:
        expected = [v for path in info.modules for k, v in state.items() if k.startswith(path + ".")]
        found = list(model.stages.get_submodule(info.name).state_dict().values())
        assert len(found) == len(expected) > 0, info.name
        assert all(torch.equal(a, b) for a, b in zip(found, expected)), info.name


def test_weights_are_hashed_once_per_load(monkeypatch):
    import convlab.assets as assets

    hashed = []
    real = assets.sha256_file
    monkeypatch.setattr(assets, "sha256_file", lambda path: hashed.append(path) or real(path))
    load_backbone("mobilenet_v2")
    assert len(hashed) == 1, hashed


def test_random_init_differs_from_pretrained():
    a = load_backbone("mobilenet_v2", weights=None)
    b = load_backbone("mobilenet_v2")
    assert not torch.equal(a.stages.stem[0].weight, b.stages.stem[0].weight)


def test_bad_arguments():
    with pytest.raises(ValueError, match="name"):
        load_backbone("resnet50")
    with pytest.raises(ValueError, match="weights"):
        load_backbone("mobilenet_v2", weights="IMAGENET1K_V2")
    model = load_backbone("mobilenet_v2")
    with pytest.raises(ValueError, match="images"):
        model.predict(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="k:"):
        model.predict(torch.zeros(3, 32, 32, dtype=torch.uint8), k=0)
    assert set(BACKBONES) == set(NAMES)


def test_preprocess_refuses_what_is_not_a_uint8_rgb_photo():
    spec = BACKBONES["mobilenet_v2"]
    with pytest.raises(ValueError, match=r"images: expected channels-first.*permute\(0, 3, 1, 2\)"):
        spec.preprocess(torch.zeros(2, 40, 50, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"images: expected 3 channels"):
        spec.preprocess(torch.zeros(2, 1, 40, 50, dtype=torch.uint8))
    with pytest.raises(TypeError, match=r"images\[1\]: expected a uint8 tensor of shape \(3, H, W\), got torch.float"):
        spec.preprocess([torch.zeros(3, 40, 50, dtype=torch.uint8), torch.zeros(3, 40, 50)])
