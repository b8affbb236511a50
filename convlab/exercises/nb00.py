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
    },
)
