"""Fuzzing: mutated label files and odd arrays through the label reader, ``inverseg data check`` and synthesis.

Every case must either work or raise the project's one-line error (``InversegError``); anything else is a bug.
The default suite runs a few hundred cases; ``pytest -m slow`` runs 10,000 (docs/reliability.md has the figures).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from _fuzz import fuzz_array, fuzz_file
from inverseg.cli.main import main
from inverseg.data.base import read_label
from inverseg.errors import InversegError
from inverseg.labels.schemes import CAMVID
from inverseg.pipeline import Pipeline
from test_bad_inputs import tiny_run  # noqa: F401 — the module-scoped tiny CRN run fixture

pytestmark = pytest.mark.usefixtures("one_thread")


def run_cases(tmp_path, pipe: Pipeline, count: int, seed: int = 0) -> dict:
    """Feed ``count`` mutated files and arrays through the reader and the pipeline; tally the outcomes."""
    tally = {"ok": 0, "one_line_error": 0, "unexpected": []}
    folder = tmp_path / "cases"
    folder.mkdir(exist_ok=True)
    for index in range(count):
        path = folder / f"case{index % 50}.png"
        path.write_bytes(fuzz_file(seed, index))
        for call in (lambda: read_label(path, CAMVID), lambda: pipe(path), lambda: pipe(fuzz_array(seed, index))):
            try:
                call()
                tally["ok"] += 1
            except InversegError as error:
                assert "\n" not in str(error).strip(), str(error)
                tally["one_line_error"] += 1
            except Exception as error:  # noqa: BLE001 — exactly what the fuzzer looks for
                tally["unexpected"].append(f"case {index}: {type(error).__name__}: {error}"[:300])
    return tally


def test_fuzzed_labels_never_escape_as_tracebacks(tiny_run, tmp_path):  # noqa: F811
    tally = run_cases(tmp_path, Pipeline.from_pretrained(tiny_run), count=150)
    assert tally["unexpected"] == []
    assert tally["ok"] > 20 and tally["one_line_error"] > 100  # both outcomes are exercised


def test_data_check_lists_fuzzed_files_as_problems(tmp_path, capsys):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for index in range(60):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / f"s{index}.png")
        (labels / f"s{index}.png").write_bytes(fuzz_file(1, index))
    status = main(["data", "check", str(tmp_path), "--dataset", "folder"])
    captured = capsys.readouterr()
    assert status in (0, 1) and "Traceback" not in captured.err
    problems = [line for line in captured.out.splitlines() if line.startswith("problem: ")]
    assert problems and all(line.count("s") and ": " in line for line in problems)


@pytest.mark.slow
def test_fuzz_10000_cases(tiny_run, tmp_path):  # noqa: F811
    tally = run_cases(tmp_path, Pipeline.from_pretrained(tiny_run), count=10_000, seed=7)
    print({"cases": 10_000, "calls": 30_000, "ok": tally["ok"], "one_line_error": tally["one_line_error"],
           "unexpected": len(tally["unexpected"])})
    assert tally["unexpected"] == []
