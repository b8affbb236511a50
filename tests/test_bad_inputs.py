"""Bad or odd inputs: each is refused with one clear line naming the file or argument, or decoded right.

The command-line table runs ``main([...])`` in this process: exit status 2, one line on stderr, no traceback, and
nothing trained (no ``last.pt``). The set-ups are tiny folders of real food photos at 32 px, so a case that is
refused late would still finish in seconds, and a case that trains by mistake fails on its exit status.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convlab.__main__ import main
from convlab.data import decode_image_file, load_image_folder

from conftest import copy_food_photos, train_argv

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("fruits", "marine_fish", "other_vegetables")


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A 60-byte PNG that claims ``width x height`` pixels: what a decompression bomb looks like to Pillow."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """``root/<class>/<photo>``: 4 food photos in each of 3 classes (6 train / 3 val / 3 test images)."""
    return copy_food_photos(tmp_path_factory.mktemp("photos"), slice(0, 4))


@pytest.fixture(scope="module")
def trained(photos, tmp_path_factory) -> Path:
    """``--out`` of one finished 1-epoch run on ``photos`` (for the --resume and evaluate cases)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(_train(photos, out)) == 0
    return out


def _train(data: Path, out: Path, *extra: str, cache: bool = True) -> list[str]:
    options = "--regime freeze_first --freeze-k 6 --input-size 32 --epochs 1 --batch-size 4"
    return train_argv(data, out, options, *extra, cache=out.parent / "features" if cache else None)


def _copy(photos: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(photos, tmp / "data"))


# Each case: (tmp, photos, trained) -> the argument list; then the text the one error line must contain.
def _one_class(tmp, photos, trained, monkeypatch):
    data = _copy(photos, tmp)
    for name in CLASSES[1:]:
        shutil.rmtree(data / name)
    return _train(data, tmp / "out")


def _empty_class(tmp, photos, trained, monkeypatch):
    data = _copy(photos, tmp)
    (data / "bread").mkdir()
    return _train(data, tmp / "out")


def _given_splits(tmp, photos, test_classes, train_classes=CLASSES):
    for split, names in (("train", train_classes), ("test", test_classes)):
        for i, name in enumerate(names):
            shutil.copytree(photos / CLASSES[i % 3], tmp / "data" / split / name)
    return tmp / "data"


def _test_class_not_in_train(tmp, photos, trained, monkeypatch):
    return _train(_given_splits(tmp, photos, CLASSES + ("bread",)), tmp / "out")


def _train_class_not_in_test(tmp, photos, trained, monkeypatch):
    return _train(_given_splits(tmp, photos, CLASSES[:2]), tmp / "out")


def _case_differs_between_splits(tmp, photos, trained, monkeypatch):
    return _train(_given_splits(tmp, photos, ("Fruits",) + CLASSES[1:]), tmp / "out")


def _case_twins_in_one_folder(tmp, photos, trained, monkeypatch):
    data = _copy(photos, tmp)
    shutil.copytree(data / "fruits", data / "FRUITS")
    return _train(data, tmp / "out")


def _only_resource_files(tmp, photos, trained, monkeypatch):
    data = _copy(photos, tmp)
    for photo in (data / "fruits").iterdir():
        photo.rename(photo.with_name("._" + photo.name))  # what copying from a Mac to a USB stick leaves
    return _train(data, tmp / "out")


def _corrupt_photo(tmp, photos, trained, monkeypatch):
    data = _copy(photos, tmp)
    (data / "fruits" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return _train(data, tmp / "out")


def _bomb(tmp, photos, trained, monkeypatch):
    data = _copy(photos, tmp)
    _png_header_only(data / "fruits" / "bomb.png", 20000, 20000)
    return _train(data, tmp / "out")


def _out_is_a_file(tmp, photos, trained, monkeypatch):
    (tmp / "out").write_text("not a folder")
    return _train(photos, tmp / "out")


def _out_under_a_file(tmp, photos, trained, monkeypatch):
    (tmp / "file").write_text("not a folder")
    return _train(photos, tmp / "file" / "out")


def _out_unwritable(tmp, photos, trained, monkeypatch):
    return _train(photos, Path("/proc/convlab_out"))  # not writable, even for root


def _cache_dir_a_file(tmp, photos, trained, monkeypatch):
    (tmp / "features").write_text("not a folder")
    return _train(photos, tmp / "out")


def _cache_dir_unwritable(tmp, photos, trained, monkeypatch):
    return _train(photos, tmp / "out", "--cache-dir", "/proc/convlab_features", cache=False)


def _home_a_file(tmp, photos, trained, monkeypatch):
    (tmp / "home").write_text("not a folder")
    monkeypatch.setenv("CONVLAB_HOME", str(tmp / "home"))
    return _train(photos, tmp / "out")


def _home_unwritable(tmp, photos, trained, monkeypatch):
    monkeypatch.setenv("CONVLAB_HOME", "/proc/convlab_home")
    return _train(photos, tmp / "out", cache=False)  # the feature cache would go under CONVLAB_HOME


def _resumed_copy(tmp, trained, data: Path | None = None) -> Path:
    """A copy of the finished run; with ``data``, its checkpoint says it trained on ``data`` (as if that folder
    had been edited in place since)."""
    out = Path(shutil.copytree(trained, tmp / "run"))
    if data is not None:
        state = torch.load(out / "last.pt", weights_only=True)
        state["config"]["data"] = str(data.resolve())
        torch.save(state, out / "last.pt")
    return out


def _resume_truncated(tmp, photos, trained, monkeypatch):
    out = _resumed_copy(tmp, trained)
    data = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 2])
    return _train(photos, out, "--resume", "--epochs", "2")


def _resume_foreign_zip(tmp, photos, trained, monkeypatch):
    out = _resumed_copy(tmp, trained)
    shutil.make_archive(str(tmp / "notes"), "zip", root_dir=photos / "fruits")
    shutil.copy(tmp / "notes.zip", out / "last.pt")  # a complete zip, but no checkpoint
    return _train(photos, out, "--resume", "--epochs", "2")


def _resume_classes_changed(tmp, photos, trained, monkeypatch):
    data = _copy(photos, tmp)
    (data / "marine_fish").rename(data / "fish")
    return _train(data, _resumed_copy(tmp, trained, data), "--resume", "--epochs", "2")


def _resume_images_changed(tmp, photos, trained, monkeypatch):
    data = _copy(photos, tmp)
    first = sorted((data / "fruits").iterdir())[0]
    shutil.copy(sorted((data / "marine_fish").iterdir())[0], first)  # same names and classes, another photo
    return _train(data, _resumed_copy(tmp, trained, data), "--resume", "--epochs", "2")


def _evaluate_truncated(tmp, photos, trained, monkeypatch):
    data = (trained / "best.pt").read_bytes()
    (tmp / "cut.pt").write_bytes(data[:1000])
    return ["evaluate", "--checkpoint", str(tmp / "cut.pt")]


def _evaluate_json_under_a_file(tmp, photos, trained, monkeypatch):
    (tmp / "file").write_text("not a folder")
    return ["evaluate", "--checkpoint", str(trained / "best.pt"), "--json", str(tmp / "file" / "eval.json")]


def _learner_copies_no_notebooks(tmp, photos, trained, monkeypatch):
    return ["learner-copies", "--src", str(tmp / "missing"), "--out", str(tmp / "copies")]


CASES = [
    (_one_class, "at least 2 class folders"),
    (_empty_class, "class folder {tmp}/data/bread has no images"),
    (_test_class_not_in_train, "test/ has ['bread'] that train/ lacks"),
    (_train_class_not_in_test, "train/ has ['other_vegetables'] that test/ lacks"),
    (_case_differs_between_splits, "differ only in case (test/Fruits vs train/fruits)"),
    (_case_twins_in_one_folder, "differ only in case ('FRUITS', 'fruits')"),
    (_only_resource_files, "fruits has no images"),
    (_corrupt_photo, "broken.jpg: not a readable image"),
    (_bomb, "bomb.png: refused as a possible decompression bomb"),
    (_out_is_a_file, "--out {tmp}/out: expected a folder, got a file"),
    (_out_under_a_file, "--out {tmp}/file/out: {tmp}/file is a file"),
    (_out_unwritable, "--out /proc/convlab_out: no permission to write in /proc"),
    (_cache_dir_a_file, "--cache-dir {tmp}/features: expected a folder, got a file"),
    (_cache_dir_unwritable, "--cache-dir /proc/convlab_features: no permission"),
    (_home_a_file, "CONVLAB_HOME {tmp}/home: expected a folder"),
    (_home_unwritable, "CONVLAB_HOME /proc/convlab_home/features: no permission to write in /proc"),
    (_resume_truncated, "--resume: {tmp}/run/last.pt: not a readable checkpoint (truncated or damaged"),
    (_resume_foreign_zip, "--resume: {tmp}/run/last.pt is not a readable checkpoint"),
    (_resume_classes_changed, "the classes of --data changed since"),
    (_resume_images_changed, "the images of the train split changed"),
    (_evaluate_truncated, "--checkpoint {tmp}/cut.pt: not a readable checkpoint"),
    (_evaluate_json_under_a_file, "--json {tmp}/file/eval.json: {tmp}/file is a file"),
    (_learner_copies_no_notebooks, "--src: no such folder: {tmp}/missing"),
]


@pytest.mark.parametrize("make, expect", CASES, ids=[make.__name__.strip("_") for make, _ in CASES])
def test_command_line_refuses_with_one_line(make, expect, photos, trained, tmp_path, capsys, monkeypatch):
    args = make(tmp_path, photos, trained, monkeypatch)
    out = Path(args[args.index("--out") + 1]) if "--out" in args else None
    before = _listing(out)
    capsys.readouterr()
    code = main(args)  # a parse error would raise SystemExit: none of these is one
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("note:")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"python -m convlab {args[0]}: error: "), err
    assert expect.format(tmp=tmp_path) in lines[0], err
    if args[0] == "train":
        assert _listing(out) == before, "a refused run must not write anything to --out"


def _listing(folder: Path | None) -> list | None:
    if folder is None or not folder.is_dir():
        return None
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_a_bad_argument_is_refused_before_torch_is_imported(tmp_path):
    """The refusal comes from the argument checks, not after the heavy imports: ``-X importtime`` lists every
    module the process imported, and torch is not among them."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "convlab", "train", "--out", "/dev/null/x", "--data", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    imported = [line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    said = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert done.returncode == 2, done.stderr
    assert said == [
        "python -m convlab train: error: --out /dev/null/x: /dev/null is a file, so no folder can be "
        "made under it; choose a folder you can write to"
    ], said
    assert "convlab.cli.options" in imported, "importtime must have listed the modules (else the check is empty)"
    assert not [m for m in imported if m == "torch" or m.startswith("torch.")], "torch was imported"


def test_learner_copies_default_source_is_the_repository(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # outside the repository: the default must not be the relative path notebooks/
    assert main(["learner-copies", "--out", str(tmp_path / "copies")]) == 0
    written = sorted(p.name for p in (tmp_path / "copies").glob("*.ipynb"))
    assert written == sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")) and written


# --------------------------------------------------------------------------------------------- decoding
def _ramp16(path: Path) -> Path:
    Image.fromarray(np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1))).save(path)
    return path


def _exif_rotated(path: Path) -> Path:
    """A 40x20 (w x h) JPEG, left half dark, with EXIF orientation 6: viewers rotate it 90 degrees clockwise."""
    a = np.full((20, 40, 3), 230, np.uint8)
    a[:, :20] = 20
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(path, exif=exif, quality=95)
    return path


def _rgba(path: Path) -> Path:
    """6x5 RGBA: colour (10, 200, 30) everywhere; opaque in the top half, fully transparent below, and half
    transparent in the last row."""
    a = np.zeros((6, 5, 4), np.uint8)
    a[..., :3] = (10, 200, 30)
    a[:3, :, 3], a[3:, :, 3], a[5, :, 3] = 255, 0, 128
    Image.fromarray(a).save(path)
    return path


def _check_rgba(x: torch.Tensor) -> None:
    """Composited over white: opaque pixels keep their colour, transparent ones are white, half is between."""
    assert x.shape == (3, 6, 5)
    assert x[:, :3].reshape(3, -1).T.unique(dim=0).tolist() == [[10, 200, 30]]
    assert bool((x[:, 3:5] == 255).all()), "a transparent pixel shows white, not the colour it hides"
    half = [round(c * 128 / 255 + 255 * (1 - 128 / 255)) for c in (10, 200, 30)]
    assert (x[:, 5] - torch.tensor(half)[:, None]).abs().max() <= 1


def _palette_transparent(path: Path) -> Path:
    """A GIF whose palette colour 0 (black) is transparent: the left half."""
    a = np.full((4, 6), 1, np.uint8)
    a[:, :3] = 0
    im = Image.fromarray(a, mode="P")
    im.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    im.save(path, transparency=0)
    return path


def _tiff(path: Path) -> Path:
    Image.fromarray(np.full((4, 6, 3), (50, 100, 150), np.uint8)).save(path)
    return path


def _check_ramp(x: torch.Tensor) -> None:
    assert x.shape == (3, 4, 256) and x.dtype == torch.uint8
    assert x[0, 0, 0] == 0 and x[0, 0, -1] == 255 and abs(x.float().mean().item() - 127.5) < 0.5  # scaled, not clipped
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])


def _check_exif(x: torch.Tensor) -> None:
    assert x.shape == (3, 40, 20), "upright: 20 wide, 40 high"
    assert x[:, :20].float().mean() < 60 and x[:, 20:].float().mean() > 180  # the dark half is now on top


@pytest.mark.parametrize(
    "make, check",
    [
        (_ramp16, _check_ramp),
        (_exif_rotated, _check_exif),
        (_rgba, _check_rgba),
        (_palette_transparent, lambda x: bool((x[:, :, :3] == 255).all()) and x[:, 0, 3].tolist() == [200, 10, 10]),
        (_tiff, lambda x: x.shape == (3, 4, 6) and x[:, 0, 0].tolist() == [50, 100, 150]),
    ],
    ids=["16-bit grey PNG", "EXIF orientation 6", "RGBA PNG", "GIF with a transparent colour", "TIFF"],
)
def test_odd_files_decode_as_a_viewer_shows_them(make, check, tmp_path):
    suffix = {"_exif_rotated": "jpg", "_palette_transparent": "gif", "_tiff": "tif"}.get(make.__name__, "png")
    x = decode_image_file(make(tmp_path / f"{make.__name__}.{suffix}"))
    assert check(x) is not False


def test_a_tiff_is_read_and_files_that_are_not_images_are_named_in_a_note(tmp_path, photos):
    data = _copy(photos, tmp_path)
    _tiff(data / "fruits" / "scan.TIF")
    (data / "fruits" / "notes.txt").write_text("where the photos came from")
    (data / "marine_fish" / "photo.heic").write_bytes(b"not read by Pillow")
    with pytest.warns(UserWarning) as caught:
        splits = load_image_folder(data)
    said = [str(w.message) for w in caught]
    assert len(said) == 1 and "skipped 2 file(s)" in said[0], said
    assert "fruits/notes.txt" in said[0] and "marine_fish/photo.heic" in said[0] and ".tif" in said[0]
    ids = splits.train.ids + splits.val.ids + splits.test.ids
    assert len(ids) == 13 and "fruits/scan.TIF" in ids


def test_bomb_and_resource_files_are_skipped_with_a_note(tmp_path, photos):
    data = _copy(photos, tmp_path)
    _png_header_only(data / "fruits" / "bomb.png", 20000, 20000)
    shutil.copy(
        data / "fruits" / sorted(p.name for p in (data / "fruits").iterdir())[0], data / "fruits" / "._photo.jpg"
    )
    with pytest.warns(UserWarning) as caught:
        splits = load_image_folder(data, on_error="skip")
    said = " ".join(str(w.message) for w in caught)
    assert "bomb.png" in said and "decompression bomb" in said and "._photo.jpg" in said
    assert len(splits.train) + len(splits.val) + len(splits.test) == 12  # the 12 photos, nothing else
    with pytest.raises(ValueError, match="bomb.png"):
        load_image_folder(data)  # on_error="raise": the bomb stops it, the resource file does not


# --------------------------------------------------------------------------------------------- fetch's table
def test_fetch_table_does_not_say_ok_for_a_file_that_failed_its_hash(tmp_path, monkeypatch, capsys):
    from convlab.assets import ASSETS, fetch

    asset = ASSETS["imagenet_samples"]
    real = fetch(asset.name)  # the verified files in the shared cache
    monkeypatch.setenv("CONVLAB_HOME", str(tmp_path / "home"))
    shutil.copytree(real, asset.folder)  # asset.folder now lies under the new CONVLAB_HOME
    damaged = asset.folder / asset.files[0].name
    damaged.write_bytes(damaged.read_bytes()[:-10])
    assert main(["fetch", "--offline", asset.name]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(asset.name))
    assert row.split()[4] == "FAILED", out  # the ok column; it said "yes" because the file exists


def test_file_dataset_leaves_out_resource_files(photos, tmp_path):
    from convlab.loading import FileImageDataset

    data = _copy(photos, tmp_path)
    (data / "fruits" / "._photo.jpg").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    ds = FileImageDataset.from_folder(data, size=16)
    assert len(ds) == 12 and not [p for p in ds.paths if p.name.startswith(".")]
