"""Notebooks 00 and 01: the references pass their own checks, typical mistakes fail with a message that names the
mistake, and the quizzes are well formed. (The notebooks' stub/None/solution runs are in test_exercises.py.)"""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from convlab.exercises import nb00, nb01

from conftest import copy_of

pytestmark = pytest.mark.usefixtures("one_thread")


def test_file_sha256_reference_passes_and_digest_bytes_fail():
    assert nb00.FILE_SHA256.run(nb00.file_sha256_reference) is None

    def raw_digest(path, chunk_size=1 << 20):
        return hashlib.sha256(open(path, "rb").read()).digest().hex().upper()

    def first_chunk_only(path, chunk_size=1 << 20):
        with open(path, "rb") as f:
            return hashlib.sha256(f.read(chunk_size)).hexdigest()

    assert "lower-case" in nb00.FILE_SHA256.run(raw_digest)
    assert "chunk_size" in nb00.FILE_SHA256.run(first_chunk_only)


def test_top_k_accuracy_reference_passes_and_train_mode_or_convlab_predict_fail():
    assert nb01.TOP_K_ACCURACY.run(nb01.top_k_accuracy_reference) is None

    def train_mode(model, images, labels, k):
        with torch.no_grad():
            logits = model(model.spec.preprocess(images))
        return float((logits.topk(k, 1).indices == labels.view(-1, 1)).any(1).double().mean())

    def count(model, images, labels, k):
        return float(copy_of(nb01.top_k_accuracy_reference)(model, images, labels, k) * len(labels))

    def predict(model, images, labels, k):
        return sum(int(y) in p.indices for p, y in zip(model.predict(images, k=k), labels.tolist())) / len(labels)

    assert "eval mode" in nb01.TOP_K_ACCURACY.run(train_mode)
    assert "a fraction of the photos" in nb01.TOP_K_ACCURACY.run(count)
    assert "calls `predict`" in nb01.TOP_K_ACCURACY.run(predict)


def test_load_weights_mistakes_are_named():
    def train_mode(path):
        return copy_of(nb01.load_mobilenet_v2_reference)(path).train()

    assert "training mode" in nb01.LOAD_WEIGHTS.run(train_mode)
    assert "not written yet" in nb01.LOAD_WEIGHTS.run(lambda path: (_ for _ in ()).throw(NotImplementedError()))


@pytest.mark.slow
def test_load_weights_reference_passes_and_random_weights_fail():
    import torchvision

    assert nb01.LOAD_WEIGHTS.run(nb01.load_mobilenet_v2_reference) is None
    assert "randomly initialised" in nb01.LOAD_WEIGHTS.run(lambda path: torchvision.models.mobilenet_v2().eval())


@pytest.mark.slow
def test_new_head_reference_passes_and_rebuilding_fails():
    import torchvision

    assert nb01.NEW_HEAD.run(nb01.replace_classifier_reference) is None
    rebuilt = nb01.NEW_HEAD.run(lambda net, n: torchvision.models.mobilenet_v2(num_classes=n))
    assert "only the last layer should change" in rebuilt

    def drop_dropout(net, n):
        net.classifier = nn.Linear(1280, n)
        return net

    assert "keep the Dropout" in nb01.NEW_HEAD.run(drop_dropout)


def test_quiz_q2_of_notebook_01_counts_the_heads_parameters():
    assert nb01.QUIZ.questions["q2"].answer == sum(p.numel() for p in nn.Linear(1280, 3).parameters())
