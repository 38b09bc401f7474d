"""SIMS retrieval speed: one query layout (~30 segments) against memory banks of growing size.

    .venv/bin/python benchmarks/sims_retrieval.py                       # CamVid bank if ../shared/data is there
    .venv/bin/python benchmarks/sims_retrieval.py --bank BANK --sizes 1000 10000 50000
    .venv/bin/python benchmarks/sims_retrieval.py --procedural          # no dataset needed

The bank is built once (CamVid train at 96×128 gives ≈10 000 segments); larger banks are made by replicating its
retrieval grids with a random shift of ±1 grid cell per copy (so copies are not identical).  Each measurement
decomposes the query layout, computes its grids and scores every segment against all bank segments of its class
(top-10), for the paper's box + context score and for the official image-coordinate mask-only score.  Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from inverseg.data import DataConfig, open_dataset
from inverseg.labels import get_scheme
from inverseg.sims.bank import BankSettings, MemoryBank, build_bank
from inverseg.sims.retrieval import RetrievalSettings, Retriever
from inverseg.sims.segments import pack_bits, unpack_bits

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


class ProceduralLayouts:
    """Street-like layouts without images (sky, buildings, road, poles, cars, people) for a dataset-free run."""

    spec = get_scheme("camvid")

    def __init__(self, count: int, size=(96, 128), seed: int = 0):
        self.count, self.size, self.seed = count, size, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        height, width = self.size
        label = np.full((height, width), 3)  # road
        horizon = int(rng.integers(height // 3, height // 2))
        label[:horizon] = 0  # sky
        x = 0
        while x < width:  # buildings / trees along the horizon
            w = int(rng.integers(8, 30))
            label[int(rng.integers(5, horizon)):horizon + 8, x:x + w] = int(rng.choice([1, 5]))
            x += w + int(rng.integers(0, 6))
        label[horizon + 8:horizon + 14] = 4  # pavement
        for _ in range(int(rng.integers(8, 16))):  # poles, signs, cars, pedestrians
            cls = int(rng.choice([2, 6, 8, 9]))
            h, w = {2: (30, 2), 6: (5, 5), 8: (14, 24), 9: (16, 5)}[cls]
            top = int(rng.integers(horizon - 10, height - h))
            left = int(rng.integers(0, width - w))
            label[top:top + h, left:left + w] = cls
        image = torch.zeros(3, height, width)
        return {"image": image, "label": torch.from_numpy(label), "name": f"layout{index}"}


class ReplicatedBank:
    """A stand-in with the bank attributes the Retriever reads, made of ``copies`` jittered copies of a bank."""

    def __init__(self, bank: MemoryBank, size: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.spec, self.settings = bank.spec, bank.settings
        base = len(bank)
        picks = np.arange(size) % base
        copy_number = np.arange(size) // base
        grid = bank.grid
        self._grids = {}
        for name in ("grid_mask", "grid_context", "grid_image_mask", "grid_image_context"):
            cells = unpack_bits(np.asarray(bank.grids(name))[picks], grid)
            shifts = rng.integers(-1, 2, size=(size, 2)) * (copy_number > 0)[:, None]
            for dy in (-1, 0, 1):  # vectorised per shift value
                for dx in (-1, 0, 1):
                    rows = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
                    if rows.any() and (dy or dx):
                        cells[rows] = np.roll(cells[rows], (dy, dx), axis=(-2, -1))
            self._grids[name] = pack_bits(cells)
        counts = np.zeros((size, 4), np.int32)
        for column, name in enumerate(("grid_mask", "grid_context", "grid_image_mask", "grid_image_context")):
            bits = np.bitwise_count(self._grids[name]).sum(axis=tuple(range(1, self._grids[name].ndim)))
            counts[:, column] = bits
        self._grids["grid_counts"] = counts
        self.classes = bank.classes[picks]
        self.segments = {"source": np.asarray(bank.segments["source"])[picks] + copy_number * bank.num_images}

    def __len__(self) -> int:
        return len(self.classes)

    def grids(self, name: str) -> np.ndarray:
        return self._grids[name]


def time_queries(bank, layouts: list[np.ndarray], settings: RetrievalSettings, repeats: int) -> dict:
    retriever = Retriever(bank, settings)
    totals, scoring, segments = [], [], []
    for layout in layouts:
        for _ in range(repeats):
            start = time.perf_counter()
            query = retriever.query(layout)
            middle = time.perf_counter()
            retriever.retrieve(query)
            end = time.perf_counter()
            totals.append(end - start)
            scoring.append(end - middle)
        segments.append(len(query.decomposition.segments))
    return {"median_seconds": round(statistics.median(totals), 4), "max_seconds": round(max(totals), 4),
            "median_scoring_seconds": round(statistics.median(scoring), 4),
            "query_segments": int(statistics.median(segments))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bank", help="an existing bank (default: build one from CamVid train, or procedural)")
    parser.add_argument("--procedural", action="store_true", help="build the bank from procedural layouts")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 2500, 5000, 10000, 20000, 50000])
    parser.add_argument("--queries", type=int, default=5, help="query layouts (default 5)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (retrieval itself is numpy)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="sims-bench-"))
    if args.bank:
        bank, source = MemoryBank(args.bank), args.bank
        queries_from = None
    elif CAMVID.is_dir() and not args.procedural:
        dataset = open_dataset(DataConfig(dataset="camvid", path=str(CAMVID), split="train", size=(96, 128)),
                               augment=False)
        start = time.perf_counter()
        bank = build_bank(dataset, work / "bank", BankSettings(), progress=False)
        source = f"CamVid train 96×128 (built in {time.perf_counter() - start:.1f} s)"
        queries_from = open_dataset(DataConfig(dataset="camvid", path=str(CAMVID), split="val", size=(96, 128)),
                                    augment=False)
    else:
        start = time.perf_counter()
        bank = build_bank(ProceduralLayouts(600), work / "bank", BankSettings(), progress=False)
        source = f"procedural layouts 96×128 (built in {time.perf_counter() - start:.1f} s)"
        queries_from = ProceduralLayouts(args.queries, seed=99)
    if queries_from is None:  # queries from the bank's own layouts
        candidates = [np.where(l == 255, bank.spec.num_classes, l).astype(np.int64)
                      for l in np.asarray(bank.layouts[:60])]
    else:
        candidates = [queries_from[i]["label"].numpy() for i in range(min(60, len(queries_from)))]
    # the layouts with the most segments (≥ 30 when the data has them): the brief's "30-segment query"
    counts = [len(bank.settings.decompose(layout, bank.spec).segments) for layout in candidates]
    layouts = [candidates[i] for i in np.argsort(counts, kind="stable")[::-1][:args.queries]]

    modes = {"paper (box + context)": RetrievalSettings(),
             "box, mask only": RetrievalSettings(context=False),
             "official (image coordinates, mask only)": RetrievalSettings.official()}
    result = {
        "bank": source,
        "bank_segments": len(bank),
        "grid": bank.grid,
        "classes": bank.spec.num_classes,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                    "load_average": os.getloadavg()[0]},
        "at_bank_size": {name: time_queries(bank, layouts, settings, args.repeats) for name, settings in modes.items()},
        "scaling": [],
    }
    for size in args.sizes:
        replicated = ReplicatedBank(bank, size)
        row = {"bank_segments": size}
        for name, settings in modes.items():
            row[name] = time_queries(replicated, layouts, settings, args.repeats)["median_seconds"]
        result["scaling"].append(row)
        print(f"  {size} segments done", file=sys.stderr)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
