"""Measure every SIMS stage of a trained run on held-out layouts (prints JSON).

    .venv/bin/python benchmarks/sims_stages.py --run runs/sims-camvid-cpu-… [--split val] [--limit 101]
    .venv/bin/python benchmarks/sims_stages.py --run RUN --set retrieval.geometry=image retrieval.context=false
    .venv/bin/python benchmarks/sims_stages.py --run RUN --skip-networks --evaluate --figure docs/figures/x.png

* retrieval — top-1 mask IoU and context IoU of every query segment (the configured score), share of segments
  that found a candidate;
* transformation network — L1 between a held-out bank segment and (a) its randomly transformed + cropped copy,
  (b) that copy aligned by T (the paper's L_T on data T never saw);
* ordering network — agreement with the front/back labels of held-out adjacent pairs (depth or heuristic);
* synthesis — pixel L1 (0–255 scale) and PSNR against the real photo, with the retrieved canvas and with an empty
  canvas (the paper's lower bound), plus the canvas itself where it is covered; seconds per layout;
* ``--evaluate``: mIoU of the evaluator segmenter (against the input layouts) and FD of both output sets — the
  ``inverseg evaluate`` protocol, once with the retrieved canvas and once with the empty canvas;
* ``--figure PNG``: layout | canvas | output (retrieved canvas) | output (empty canvas) | real, a few val rows.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from inverseg.data import open_dataset
from inverseg.models.sims import warp
from inverseg.pipeline import Pipeline
from inverseg.sims.bank import build_bank
from inverseg.sims.ordering import pair_probability


def psnr(l2: float) -> float:
    return 10 * math.log10(4.0 / max(l2, 1e-12))  # images in [-1, 1]: peak-to-peak 2


def evaluate_networks(method, dataset, config, count: int, seed: int) -> dict:
    """T's L_T and the ordering network's agreement on a bank cut from the held-out layouts."""
    result = {}
    with tempfile.TemporaryDirectory() as folder:
        held_out = build_bank(dataset, Path(folder) / "bank", config.settings.bank, spec=dataset.spec,
                              progress=False, limit=count)
        generator = torch.Generator().manual_seed(seed)
        if method.transformer is not None:
            areas = np.asarray(held_out.segments["area"])
            pool = np.flatnonzero(areas >= config.settings.transform.min_area)
            picks = pool[torch.randperm(len(pool), generator=generator)[:256].numpy()]
            with torch.no_grad():
                windows, perturbed = method.transform_examples(held_out, picks.tolist(), generator)
                aligned = warp(perturbed, method.transformer(torch.cat([perturbed, windows[:, 3:4]], 1)))
            result["transformation"] = {
                "segments": len(picks),
                "l1_unaligned": round(float((perturbed[:, :3] - windows[:, :3]).abs().mean()), 5),
                "l1_aligned_by_T": round(float((aligned[:, :3] - windows[:, :3]).abs().mean()), 5),
            }
        if method.orderer is not None and len(held_out.pairs):
            indices = list(range(min(len(held_out.pairs), 2000)))
            correct = 0
            with torch.no_grad():
                for start in range(0, len(indices), 64):
                    inputs, _, class_a, class_b, a_in_front = method.order_examples(held_out, indices[start:start + 64])
                    p = pair_probability(method.orderer(inputs), class_a, class_b)
                    correct += int(((p >= 0.5) == a_in_front).sum())
            result["ordering"] = {"pairs": len(indices), "labels": held_out.meta["order_labels"],
                                  "agreement": round(correct / len(indices), 4)}
    return result


def evaluate_outputs(config, samples: list[dict], outputs: dict, split: str) -> dict:
    """mIoU (evaluator segmenter vs the input layouts) and FD for the retrieved-canvas and empty-canvas outputs."""
    from inverseg.eval.evaluate import EvalData, GeneratedSet, evaluate_set
    from inverseg.eval.features import load_extractor
    from inverseg.eval.paths import default_evaluator_dir
    from inverseg.eval.segmenter import load_segmenter

    size = tuple(config.data.size)
    data = EvalData(dataset=config.data.dataset, path=str(config.data.path), split=split)
    real = data.open(size)
    segmenter = load_segmenter(default_evaluator_dir(real.spec.name, size), real.spec)
    extractor = load_extractor("auto")
    names = [str(s["name"]) for s in samples]
    labels = [s["label"] for s in samples]
    report = {}
    for kind in ("retrieved", "empty"):
        generated = GeneratedSet(names, [[image] for image in outputs[kind]], labels, size)
        result = evaluate_set(generated, data, segmenter, extractor, size, log=lambda *a: None)
        scores = result["metrics"]["segmentation"]
        report[kind] = {"miou_generated": round(float(scores["generated"]["miou"]), 4),
                        "miou_real": round(float(scores["real"]["miou"]), 4),
                        "fd": round(float(result["metrics"]["frechet"]["generated_vs_real"]), 2),
                        "fd_name": result["metrics"]["frechet"]["name"]}
    return report


def save_outputs(folder: Path, samples: list[dict], outputs: dict) -> None:
    from PIL import Image

    from inverseg.utils.images import to_uint8

    for kind, images in outputs.items():
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for sample, image in zip(samples, images):
            Image.fromarray(to_uint8(image)).save(folder / kind / f"{sample['name']}.png")


def save_figure(path: str, spec, samples: list[dict], outputs: dict, rows: list[int]) -> None:
    """A small PNG: one row per chosen layout, columns layout | canvas | output | empty-canvas output | real."""
    from PIL import Image

    from inverseg.utils.images import to_uint8

    tiles = []
    for i in rows:
        layout = np.asarray(spec.colorize(samples[i]["label"]), dtype=np.uint8)
        pictures = [to_uint8(outputs[key][i]) for key in ("canvas", "retrieved", "empty")]
        tiles.append(np.concatenate([layout, *pictures, to_uint8(samples[i]["image"])], axis=1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, axis=0)).save(path, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a SIMS run directory (or checkpoint)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=101, help="held-out layouts to use (default 101)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                        help="change test-time settings, e.g. retrieval.geometry=image transform.round_to_identity=true")
    parser.add_argument("--skip-networks", action="store_true", help="only retrieval and synthesis")
    parser.add_argument("--evaluate", action="store_true", help="mIoU and FD of both output sets (needs the "
                        "evaluator segmenter of the label set and size)")
    parser.add_argument("--outputs", help="save DIR/retrieved, DIR/empty and DIR/canvas PNGs (NAME.png), for "
                        "'inverseg evaluate --images DIR/retrieved --labels …' later")
    parser.add_argument("--figure", help="write layout | canvas | output | empty-canvas output | real rows here")
    parser.add_argument("--figure-rows", type=int, nargs="*", default=[0, 25, 50, 75],
                        help="which held-out layouts the figure shows")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = Pipeline.from_pretrained(args.run)
    method = pipe.method
    config = pipe.config
    for item in args.set:  # test-time options only: retrieval, canvas, transform rounding/rejection, …
        key, value = item.split("=", 1)
        section, name = key.split(".")
        if not hasattr(getattr(config.settings, section), name):
            parser.error(f"unknown setting {key}")
        setattr(getattr(config.settings, section), name, yaml.safe_load(value))
    method.settings = config.settings
    method._retriever = None  # rebuilt with the changed retrieval settings
    dataset = open_dataset(config.data, split=args.split, augment=False)
    count = min(args.limit, len(dataset))
    samples = [dataset[i] for i in range(count)]
    result: dict = {"run": str(args.run), "split": args.split, "layouts": count, "changed": args.set,
                    "bank": method.bank.describe()}
    result["bank"].pop("per_class")

    # retrieval
    mask_iou, context_iou, found, total = [], [], 0, 0
    for sample in samples:
        query = method.retriever.query(sample["label"].numpy())
        for match in method.retriever.retrieve(query):
            total += 1
            if match is not None:
                found += 1
                mask_iou.append(float(match.mask_iou[0]))
                context_iou.append(float(match.context_iou[0]))
    result["retrieval"] = {"settings": vars(config.settings.retrieval), "query_segments": total,
                           "with_candidate": round(found / max(total, 1), 4),
                           "top1_mask_iou": round(float(np.mean(mask_iou)), 4),
                           "top1_context_iou": round(float(np.mean(context_iou)), 4)}

    # a bank of the held-out layouts: segments and adjacent pairs T and the ordering network never saw
    if not args.skip_networks:
        result.update(evaluate_networks(method, dataset, config, count, args.seed))

    # synthesis with the retrieved canvas vs an empty canvas
    stats = {"retrieved": [], "empty": [], "canvas_where_covered": [], "coverage": []}
    outputs: dict[str, list[torch.Tensor]] = {"retrieved": [], "empty": [], "canvas": []}
    seconds = {"canvas": 0.0, "synthesis": 0.0}
    for sample in samples:
        label, reference = sample["label"], sample["image"]
        start = time.perf_counter()
        canvas = method.build_canvas(label)
        middle = time.perf_counter()
        retrieved = method.synthesize(canvas.image[None], canvas.mask[None], canvas.layout[None])[0]
        seconds["canvas"] += middle - start
        seconds["synthesis"] += time.perf_counter() - middle
        empty = method.sample(label[None], canvas="empty")[0, 0]
        outputs["retrieved"].append(retrieved.cpu())
        outputs["empty"].append(empty.cpu())
        outputs["canvas"].append(canvas.display())
        for key, image in (("retrieved", retrieved), ("empty", empty)):
            stats[key].append(((image - reference).abs().mean().item(), ((image - reference) ** 2).mean().item()))
        covered = canvas.mask
        stats["coverage"].append(float(covered.float().mean()))
        if covered.any():
            difference = (canvas.image - reference)[:, covered]
            stats["canvas_where_covered"].append((difference.abs().mean().item(), (difference ** 2).mean().item()))
    result["synthesis"] = {
        name: {"l1_0_255": round(127.5 * float(np.mean([v[0] for v in values])), 2),
               "psnr_db": round(psnr(float(np.mean([v[1] for v in values]))), 2)}
        for name, values in stats.items() if name != "coverage"
    }
    result["synthesis"]["canvas_coverage"] = round(float(np.mean(stats["coverage"])), 4)
    result["seconds_per_layout"] = {key: round(value / count, 3) for key, value in seconds.items()}
    if args.evaluate:
        result["evaluation"] = evaluate_outputs(config, samples, outputs, args.split)
    if args.outputs:
        save_outputs(Path(args.outputs), samples, outputs)
        result["outputs"] = args.outputs
    if args.figure:
        save_figure(args.figure, method.spec, samples, outputs, [i for i in args.figure_rows if i < count])
        result["figure"] = args.figure
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
