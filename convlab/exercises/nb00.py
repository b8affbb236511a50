"""Notebook 00 (start here): check a download's sha256 yourself; a quiz on licences, hashes and the exercises.

Importing this module is cheap: the test hashes the real weights file only when it runs.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from convlab.exercises.core import Exercise, Question, Quiz, expect

__all__ = ["FILE_SHA256", "QUIZ", "file_sha256_reference"]


def file_sha256_reference(path: str, chunk_size: int = 1 << 20) -> str:
    """The hex sha256 of the file at ``path``, read in chunks of ``chunk_size`` bytes (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _test_file_sha256(file_sha256) -> None:
    data = b"convlab" * 1000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "small.bin"
        path.write_bytes(data)
        got = file_sha256(str(path))
        expect(isinstance(got, str), f"return the hex digest as a str (digest.hexdigest()), got {type(got).__name__}")
        expect(
            len(got) == 64 and got == got.lower(),
            f"a sha256 in hex is 64 lower-case characters, got {len(got)}: use .hexdigest(), not .digest()",
        )
        expect(
            got == hashlib.sha256(data).hexdigest(),
            "the digest of a 7,000-byte test file is wrong: feed every chunk to the same hash object, in order",
        )
        expect(
            file_sha256(str(path), chunk_size=7) == got and file_sha256(str(path), chunk_size=4096) == got,
            "the result changes with chunk_size: read with f.read(chunk_size) until it returns b''",
        )
    from convlab.assets import ASSETS, asset_path

    real = asset_path("mobilenet_v2")
    expect(
        file_sha256(str(real)) == ASSETS["mobilenet_v2"].sha256,
        f"on the real MobileNetV2 weights ({real.name}) your digest differs from the pinned sha256",
    )


FILE_SHA256 = Exercise(
    name="file_sha256",
    test=_test_file_sha256,
    reference=file_sha256_reference,
    hints=[
        "A hash object is fed bytes piece by piece and gives the same digest as hashing the whole file at once: "
        "open the file in binary mode and feed it chunk by chunk, so a 1 GB file never sits in memory.",
        "The API: hashlib.sha256() makes the hash object, its .update(bytes) feeds it and .hexdigest() gives the "
        "64-character answer; a file opened with 'rb' returns b'' from .read(n) at its end.",
    ],
    skill="verifying a download against its published sha256",
    handle="nb00.FILE_SHA256",
)

QUIZ = Quiz(
    "Quiz: before you start",
    {
        "q1": Question(
            "You downloaded a weights file and its sha256 differs from the published one. What should you do?",
            "c",
            "A different hash means different bytes: a truncated download, another version, or a tampered file. "
            "None of them is the file the published accuracy was measured on; fetch it again (convlab's "
            "`python -m convlab fetch --force` replaces only files that fail).",
            options={
                "a": "use it if the model still loads",
                "b": "use it if the file size matches",
                "c": "do not use it; download it again from a trusted source",
            },
            wrong={
                "a": "a tampered or truncated-then-padded file may still load, and give wrong answers or run code.",
                "b": "a changed byte keeps the size; only the hash tells.",
            },
        ),
        "q2": Question(
            "The food photos are AGPL-3.0. You train a model on them for this course. Which is true?",
            "b",
            "Learning and research with them is fine; a service that serves the photos must share its source. "
            "Licences of data and weights bind you as much as licences of code.",
            options={
                "a": "AGPL only covers code, so photos are free to use in any product",
                "b": "fine for learning; a product serving them must publish its source",
                "c": "you may not even open them without a licence fee",
            },
            wrong={
                "a": "a licence covers whatever it is attached to: here, the photos.",
                "c": "AGPL is an open licence: using them to learn is allowed.",
            },
        ),
        "q3": Question(
            "In your copy of a notebook, you skip an exercise and click Run All. What happens?",
            "a",
            "The check cell is tagged `raises-exception`: it fails in red, Run All goes on, and later cells use "
            "convlab's reference implementation with one line saying so.",
            options={
                "a": "the check fails in red, the rest runs with convlab's reference",
                "b": "Run All stops at the first failing check",
                "c": "the check passes silently",
            },
            wrong={
                "b": "that is what an untagged cell does; check cells carry the `raises-exception` tag.",
                "c": "a stub raises NotImplementedError, which the check reports as not yet done.",
            },
        ),
        "q4": Question(
            "How many hexadecimal characters does a sha256 digest have?",
            64,
            "256 bits / 4 bits per hex character = 64 characters.",
            tolerance=0,
            wrong={"low": "each hex character carries 4 bits.", "high": "each hex character carries 4 bits."},
        ),
        "q5": Question(
            (
                "From your run: your `file_sha256` read the MobileNetV2 weights file in chunks of 1 MiB "
                "(`chunk_size = 1 << 20`). How many chunks did it read (the last one may be short)?"
            ),
            answer=None,
            measured="weights_chunks",
            why=(
                "The file's size in MiB, rounded up: reading in chunks keeps the memory use at one chunk however "
                "large the file is."
            ),
            wrong={
                "low": "round up: a last, shorter chunk counts too.",
                "high": "divide the size in bytes by 2**20.",
            },
        ),
        "q6": Question(
            "Why does convlab pin a sha256 for every file rather than its size?",
            options={
                "a": "a hash is quicker to read than a size",
                "b": "the size is enough to notice a changed file",
                "c": ("a changed, corrupted or swapped file can have the same size; any changed byte changes the hash"),
            },
            answer="c",
            why=(
                "Equal sizes say little: a flipped bit, a different checkpoint of the same architecture or a "
                "tampered file all keep the size. A cryptographic hash changes with any byte."
            ),
            wrong={
                "a": "the size is free; the hash reads the whole file. It is worth it.",
                "b": "two checkpoints of one architecture have exactly the same size.",
            },
        ),
        "q7": Question(
            "Where does convlab keep the weights and photos it has verified?",
            options={
                "a": "nowhere: every notebook downloads them again",
                "b": "in its cache folder, `$CONVLAB_HOME` (default `~/.cache/convlab`)",
                "c": "beside each notebook",
            },
            answer="b",
            why="The set-up verifies every file into the cache once; the notebooks read from there, offline.",
            wrong={
                "a": "the course runs offline once installed: nothing is downloaded by a notebook.",
                "c": "the notebooks folder holds notebooks and figures only.",
            },
        ),
        "q8": Question(
            (
                "A repository's code is MIT-licensed, and its pretrained weights are released for non-commercial "
                "use only. You ship a product with both. Which licence governs the weights?"
            ),
            options={
                "a": "none: weights are numbers, not a work",
                "b": "MIT: it covers everything in the repository",
                "c": "the weights' own licence: code and weights are licensed separately",
            },
            answer="c",
            why=(
                "Weights often carry their own terms (and inherit obligations from their training data): read the "
                "model card, not only the code's LICENSE file."
            ),
            wrong={
                "a": "published weights come with terms of use; treat them like any other licensed asset.",
                "b": "the weights' release states its own terms, which the code's licence does not override.",
            },
        ),
        "q9": Question(
            (
                "You edited your copy of a notebook in `~/convlab-course` and run `python -m convlab open` again. "
                "What happens to your edits?"
            ),
            options={
                "a": "they are kept: only notebooks missing from the folder are added",
                "b": "they are merged with the course's notebook",
                "c": "they are overwritten by a fresh copy",
            },
            answer="a",
            why="Your work is never overwritten; delete a copy to get a fresh one.",
            wrong={
                "b": "nothing is merged: your copy stays as it is.",
                "c": "only missing notebooks are written.",
            },
        ),
    },
    research=[
        (
            "Find the model card of a published model you would like to use (torchvision, timm or Hugging Face): "
            "which licence covers its weights, which data trained them, and is a hash published?"
        ),
        (
            "Time `sha256sum` and your `file_sha256` on the weights file: which is faster, and which chunk size "
            "makes yours fastest?"
        ),
    ],
)
