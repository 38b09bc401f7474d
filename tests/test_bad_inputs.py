"""Every file a user can hand us either works or gives the project's one-line error naming the file and the fix.

Covers the label/image reader (every PIL mode a label PNG comes in, JPEG labels, odd and 1×1 sizes, mismatched
pairs, missing partners, symlink loops, empty/truncated/non-image files, decompression bombs), the CLI (exit 2 and
one ``error:`` line, never a traceback) and damaged checkpoints.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import build_camvid, save_index
from inverseg.cli.main import main
from inverseg.data import DataConfig, open_dataset
from inverseg.data.base import DatasetError, read_label, read_rgb
from inverseg.errors import InversegError
from inverseg.labels import LabelError
from inverseg.labels.schemes import CAMVID
from inverseg.pipeline import Pipeline
from inverseg.train import Trainer
from inverseg.train import checkpoint as ckpt
from test_trainer import make_folder_dataset, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

RAW = np.array([[0, 1, 2, 11], [3, 4, 5, 6], [7, 8, 9, 10]], np.uint8)  # CamVid (SegNet) ids 0–10 and void 11


def png_with_header(path: Path, width: int, height: int) -> Path:
    """A valid PNG header claiming ``width``×``height`` 1-bit pixels, followed by almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------------------------------- label modes
@pytest.mark.parametrize("mode", ["L", "P", "I;16", "I", "LA", "F"])
def test_every_index_mode_reads_the_same_ids(tmp_path, mode):
    path = tmp_path / f"label_{mode.replace(';', '')}.{'tif' if mode in ('I', 'F') else 'png'}"  # PNG has no I/F
    if mode in ("L", "P"):
        save_index(path, RAW, mode)
    elif mode == "LA":
        Image.merge("LA", (Image.fromarray(RAW, "L"), Image.fromarray(np.full_like(RAW, 200), "L"))).save(path)
    elif mode == "F":
        Image.fromarray(RAW.astype(np.float32), "F").save(path)
    else:
        Image.fromarray(RAW.astype(np.uint16 if mode == "I;16" else np.int32)).save(path)
    ids = read_label(path, CAMVID)
    assert ids.dtype == np.int64 and np.array_equal(ids, np.where(RAW == 11, CAMVID.ignore_index, RAW))


def test_colour_label_needs_a_palette_and_jpeg_labels_are_refused(tmp_path):
    rgb = tmp_path / "colour.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb)
    with pytest.raises(LabelError, match=r"colour.png: is a colour \(RGB\) label image.*fix: pass --palette"):
        read_label(rgb, CAMVID)
    jpeg = tmp_path / "label.jpg"
    Image.fromarray(RAW).save(jpeg)
    with pytest.raises(LabelError, match=r"label.jpg: label is a JPEG file.*fix: save label maps as PNG"):
        read_label(jpeg, CAMVID)
    fractional = tmp_path / "float.tif"
    Image.fromarray(np.full((3, 3), 1.5, np.float32), "F").save(fractional)
    with pytest.raises(LabelError, match="non-integer"):
        read_label(fractional, CAMVID)


def test_photos_of_every_mode_become_rgb(tmp_path):
    grey16 = tmp_path / "grey16.png"
    Image.fromarray((np.arange(12).reshape(3, 4) * 5000).astype(np.uint16)).save(grey16)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.full((3, 4, 4), 100, np.uint8), "RGBA").save(rgba)
    for path in (grey16, rgba):
        array = read_rgb(path)
        assert array.shape == (3, 4, 3) and array.dtype == np.uint8
    assert read_rgb(grey16).max() == 255 and read_rgb(grey16)[0, 0, 0] == 0


# ------------------------------------------------------------------------------------------- broken files
def broken_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name → (file, what its one-line error must say)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = save_index(folder / "good.png", np.random.default_rng(0).integers(0, 11, (64, 64)))
    data = good.read_bytes()
    files = {
        "empty": (folder / "empty.png", "file is empty (0 bytes)"),
        "text": (folder / "text.png", "not an image format PIL reads"),
        "truncated": (folder / "truncated.png", "truncated or corrupt"),
        "folder": (folder / "folder.png", "is a folder"),
        "loop": (folder / "loop.png", "cannot access the label file"),
        "dangling": (folder / "dangling.png", "label file not found"),
        "bomb": (folder / "bomb.png", "decompression bomb"),
    }
    files["empty"][0].write_bytes(b"")
    files["text"][0].write_text("hello, I am not a PNG\n")
    files["truncated"][0].write_bytes(data[: len(data) // 2])
    files["folder"][0].mkdir()
    os.symlink(folder / "loop.png", folder / "loop.png")  # a link to itself: ELOOP
    os.symlink(folder / "missing-target.png", folder / "dangling.png")
    png_with_header(files["bomb"][0], 20_000, 20_000)  # 400 M pixels announced by a 100-byte file
    return files


def test_every_broken_file_is_one_line_naming_it(tmp_path):
    for name, (path, says) in broken_files(tmp_path).items():
        with pytest.raises(DatasetError) as info:
            read_label(path, CAMVID)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and says in message and "fix:" in message, (name, message)
        assert "\n" not in message


def test_pixel_limit_can_be_lowered_and_raised(tmp_path, monkeypatch):
    path = save_index(tmp_path / "big.png", np.zeros((40, 40), np.uint8))
    monkeypatch.setenv("INVERSEG_MAX_PIXELS", "1000")
    with pytest.raises(DatasetError, match=r"40×40 = 1,600 pixels, more than the limit of 1,000"):
        read_label(path, CAMVID)
    monkeypatch.setenv("INVERSEG_MAX_PIXELS", "2000")
    assert read_label(path, CAMVID).shape == (40, 40)


def test_odd_sizes_mismatches_and_missing_partners(tmp_path):
    root = tmp_path / "camvid"
    build_camvid(root, {"train": 3})
    save_index(root / "trainannot" / "train000.png", np.zeros((1, 1), np.uint8))  # a 1×1 label beside a 32×24 photo
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(root / "train" / "train001.png")
    save_index(root / "trainannot" / "train001.png", np.ones((1, 1), np.uint8))  # a 1×1 pair: works
    (root / "train" / "train002.png").unlink()  # a label without its photo
    config = DataConfig(dataset="camvid", path=str(root), split="train", size=(5, 7))
    with pytest.raises(DatasetError, match=r"train002.png: no image file for this label \(missing partner\)"):
        open_dataset(config, split="train")
    skipping = open_dataset(DataConfig(dataset="camvid", path=str(root), split="train", size=(5, 7),
                                       on_problem="skip"), split="train")
    sample = skipping[0]  # train000 is mismatched: replaced by train001 (1×1 resized to 5×7)
    assert sample["name"] == "train001" and tuple(sample["label"].shape) == (5, 7)
    assert torch.all(sample["label"] == 1)
    problems = skipping.check()
    assert any("train000.png: image is 32×24 but label train000.png is 1×1" in p for p in problems)
    assert any("missing partner" in p for p in problems)


# ------------------------------------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    data_root = make_folder_dataset(root / "data")
    run = root / "run"
    Trainer(tiny_config(data_root, "train.steps=2"), run, show_progress=False).fit()
    return run


def test_synthesize_on_broken_files_is_one_line_exit_2(tiny_run, tmp_path, capsys):
    for name, (path, says) in broken_files(tmp_path / "labels").items():
        status = main(["synthesize", "--checkpoint", str(tiny_run), "--labels", str(path), "--out",
                       str(tmp_path / "out")])
        err = capsys.readouterr().err.strip().splitlines()
        if name == "folder":  # a folder is a valid --labels argument: it holds no label PNGs
            assert status == 2 and err[-1].startswith("error: ") and "no label PNGs" in err[-1]
            continue
        assert status == 2, name
        assert len(err) == 1 and err[0].startswith(f"error: {path}: ") and says in err[0], (name, err)


def test_damaged_checkpoints_are_one_line_errors(tiny_run, tmp_path, capsys):
    import shutil

    def damaged(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(ckpt.resolve_checkpoint(tiny_run), copy)
        return copy

    truncated = damaged("truncated")
    weights = truncated / ckpt.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:200])
    edited = damaged("edited")
    (edited / ckpt.STATE_FILE).write_text('{"step": 2, "method": "crn"')  # cut mid-way
    foreign = damaged("foreign")
    from safetensors.torch import save_file
    save_file({"generator.nonsense": torch.zeros(3)}, str(foreign / ckpt.WEIGHTS_FILE))
    for copy, says in ((truncated, f"{weights}: truncated or corrupt safetensors file"),
                       (edited, f"{edited / ckpt.STATE_FILE}: unreadable or corrupt JSON"),
                       (foreign, "weights do not fit the model")):
        with pytest.raises(ckpt.CheckpointError, match="fix: ") as info:
            Pipeline.from_pretrained(copy)
        assert says in str(info.value) and "\n" not in str(info.value)
        assert main(["synthesize", "--checkpoint", str(copy), "--labels", "x.png", "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0]


def test_every_project_error_is_an_inverseg_error():
    from inverseg.config import ConfigError
    from inverseg.eval.segmenter import SegmenterError
    from inverseg.eval.study.store import StudyError
    from inverseg.perception.weights import WeightsError, WeightsMissingError
    from inverseg.sims.bank import BankError

    for error in (ConfigError, SegmenterError, StudyError, WeightsError, WeightsMissingError, BankError,
                  LabelError, DatasetError, ckpt.CheckpointError):
        assert issubclass(error, InversegError), error
