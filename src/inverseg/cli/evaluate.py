"""``inverseg evaluate``: score a trained run (or a folder of generated images) — mIoU, pixel accuracy, FID or
FD-MobileNetV2, KID/KD, diversity — and write JSON + Markdown + HTML reports with the pinned protocol."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm

from ..data import DATASET_KINDS
from .main import UserError, add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "evaluate",
        "evaluate a run (synthesizes the split) or existing images against a dataset's layouts and real images",
        "  inverseg evaluate --checkpoint runs/crn-camvid --dataset camvid --data ../shared/data/camvid\n"
        "  inverseg evaluate --checkpoint runs/crn-div --dataset camvid --data ../shared/data/camvid --k 9\n"
        "  inverseg evaluate --images out/ --labels ../shared/data/camvid/valannot --dataset camvid \\\n"
        "      --data ../shared/data/camvid --json results/crn.json --name CRN\n"
        "  inverseg evaluate --checkpoint runs/x --dataset cityscapes --data data/cityscapes --size 256x512 \\\n"
        "      --evaluator drn-d-105.json\n",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="RUN_DIR", help="run or checkpoint directory to synthesize with")
    source.add_argument("--images", metavar="DIR", help="generated images named LABEL.png or LABEL_i.png")
    parser.add_argument("--labels", metavar="DIR", help="with --images: the input label maps")
    parser.add_argument("--dataset", required=True, choices=[k for k in DATASET_KINDS if k != "synthetic"])
    parser.add_argument("--data", required=True, metavar="PATH", help="dataset root (real images and layouts)")
    parser.add_argument("--split", default="val", help="split whose layouts/real images are used (default val)")
    parser.add_argument("--evaluator", metavar="DIR_OR_JSON",
                        help="evaluator folder ('inverseg evaluator train') or segmenter JSON (TorchScript/ONNX); "
                             "default: $INVERSEG_CACHE/evaluators/<label set>-<H>x<W>")
    parser.add_argument("--size", metavar="HxW", help="evaluation resolution (default: the evaluator's, else the "
                                                     "generated images')")
    parser.add_argument("--json", metavar="OUT", help="result JSON; the reports are written next to it "
                                                     "(default RUN_DIR/eval/eval_SPLIT.json)")
    parser.add_argument("--k", type=int, default=1, help="samples per layout; k ≥ 2 adds diversity (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="layout i is synthesized with seed SEED+i")
    parser.add_argument("--extractor", default="auto", choices=("auto", "fid-inception", "mobilenet_v2"),
                        help="features for FD/KD: auto = FID Inception when its file is present, else MobileNetV2")
    parser.add_argument("--name", help="row name in 'inverseg compare' (default: the run/folder name)")
    parser.add_argument("--limit", type=int, help="only the first N layouts (quick looks; not a valid score)")
    parser.add_argument("--no-cache", action="store_true", help="recompute the real images' features")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--palette", help="TSV palette for colour-coded label PNGs (folder datasets)")
    parser.add_argument("--ignore-id", type=int, help="palette id meaning void (folder datasets)")
    parser.set_defaults(func=run)


def _log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def resolve_segmenter(evaluator: str | None, spec, size_arg: tuple[int, int] | None,
                      generated_size: tuple[int, int], dataset: str, data: str):
    """(segmenter, evaluation resolution) from --evaluator/--size, else the cached evaluator for the label set."""
    from ..eval.paths import default_evaluator_dir, slug
    from ..eval.segmenter import MobileNetSegmenter, load_segmenter

    if evaluator is None:
        size = size_arg or tuple(generated_size)
        directory = default_evaluator_dir(spec.name, size)
        if not (directory / "evaluator.json").is_file() and size_arg is None:
            # images of another size are resized to the evaluator's resolution, so a single cached evaluator of
            # this label set is unambiguous
            cached = sorted(p.parent for p in directory.parent.glob(f"{slug(spec.name)}-*x*/evaluator.json"))
            if len(cached) == 1:
                directory = cached[0]
                _log(f"using the cached evaluator {directory} (generated images are resized to its resolution)")
            elif len(cached) > 1:
                raise UserError(f"several cached '{spec.name}' evaluators ({', '.join(p.name for p in cached)}) and "
                                f"none at {size[0]}x{size[1]}; fix: pass --size HxW or --evaluator DIR")
        if not (directory / "evaluator.json").is_file():
            raise UserError(f"no evaluator for '{spec.name}' at {size[0]}x{size[1]} in {directory}; fix: inverseg "
                            f"evaluator train --dataset {dataset} --data {data} --size {size[0]}x{size[1]} "
                            f"(≈12 min on 2 CPU threads), or pass --evaluator DIR|SEGMENTER.json")
        evaluator = str(directory)
    segmenter = load_segmenter(evaluator, spec)
    if isinstance(segmenter, MobileNetSegmenter):
        if size_arg and tuple(size_arg) != tuple(segmenter.size):
            raise UserError(f"{evaluator}: the evaluator was trained at {segmenter.size[0]}x{segmenter.size[1]}, "
                            f"not {size_arg[0]}x{size_arg[1]}; fix: drop --size or train an evaluator at that size")
        return segmenter, tuple(segmenter.size)
    return segmenter, tuple(size_arg or generated_size)


def run(args) -> int:
    import torch

    from ..eval.evaluate import EvalData, evaluate_set, read_image_folder, resize_image, resize_label, \
        synthesize_split
    from ..eval.features import load_extractor
    from ..eval.paths import parse_size
    from ..eval.report import write_report
    from ..eval.segmenter import SegmenterError
    from ..perception.weights import WeightsMissingError

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.k < 1:
        raise UserError("--k must be at least 1")
    try:
        size_arg = parse_size(args.size) if args.size else None
    except ValueError as error:
        raise UserError(str(error)) from None
    data = EvalData(args.dataset, args.data, args.split, args.palette, args.ignore_id)
    real = data.open(None)
    spec = real.spec

    if args.checkpoint:
        if args.labels:
            raise UserError("--labels goes with --images; with --checkpoint the split's layouts are synthesized")
        from ..pipeline import Pipeline
        from ..train.checkpoint import CheckpointError

        try:
            pipe = Pipeline.from_pretrained(args.checkpoint)
        except CheckpointError as error:
            raise UserError(str(error)) from None
        if list(pipe.spec.class_names) != list(spec.class_names):
            raise UserError(f"{args.checkpoint}: the run was trained on label set '{pipe.spec.name}', the dataset "
                            f"uses '{spec.name}'")
        checkpoint = Path(pipe.source)
        run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint
        segmenter, size = _segmenter(args, spec, size_arg, pipe.image_size)
        try:
            generated = synthesize_split(pipe, data, size, k=args.k, seed=args.seed, limit=args.limit,
                                         progress=lambda items: tqdm(items, desc="synthesize", unit="layout",
                                                                     file=sys.stderr, disable=None))
        except ValueError as error:  # e.g. k larger than the model can produce
            raise UserError(str(error)) from None
        parameters = pipe.method.inference_parameter_count()
        state = json.loads((checkpoint / "state.json").read_text())
        source = {"kind": "checkpoint", "name": args.name or run_dir.name, "method": state.get("method", ""),
                  "parameters": parameters, "checkpoint": str(checkpoint), "step": state.get("step"),
                  "train_cpu_seconds": state.get("cpu_seconds"), "seed": args.seed,
                  # the perception networks the run trained with, as resolved (None: not recorded by that run)
                  "perception": state.get("perception"),
                  # what the EMA generator went through before saving (OASIS), and on which training images
                  "ema": {"method": (state.get("method_state") or {}).get("ema"),
                          "data": state.get("ema_recalibration")},
                  "init_from": (state.get("init_from") or {}).get("checkpoint"),
                  "init_from_cpu_seconds": (state.get("init_from") or {}).get("source_cpu_seconds")}
        out = Path(args.json) if args.json else run_dir / "eval" / f"eval_{args.split}.json"
    else:
        if not args.labels:
            raise UserError("--images needs --labels DIR (the label maps the images were generated from)")
        try:
            generated = read_image_folder(args.images, args.labels, spec, getattr(real, "palette", None))
        except ValueError as error:
            raise UserError(str(error)) from None
        if args.limit:
            generated.names, generated.images, generated.labels = (
                generated.names[:args.limit], generated.images[:args.limit], generated.labels[:args.limit])
        if args.k > 1 and generated.k < args.k:
            raise UserError(f"{args.images}: --k {args.k} but some layouts have only {generated.k} image(s)")
        segmenter, size = _segmenter(args, spec, size_arg, generated.generated_size)
        images_dir = Path(args.images)
        source = {"kind": "images", "name": args.name or images_dir.resolve().name, "method": "",
                  "parameters": None, "images": str(images_dir), "labels": str(args.labels)}
        out = Path(args.json) if args.json else images_dir / "eval" / f"eval_{args.split}.json"

    try:
        extractor = load_extractor(args.extractor)
    except WeightsMissingError as error:
        raise UserError(str(error)) from None
    try:
        result = evaluate_set(generated, data, segmenter, extractor, size, source=source,
                              use_cache=not args.no_cache, log=_log)
    except (ValueError, SegmenterError) as error:
        raise UserError(str(error)) from None
    if args.limit:
        result["protocol"]["note"] = f"--limit {args.limit}: only the first layouts; not a valid score"
    real_at_size = data.open(size)
    wanted = set(generated.names)
    real_images = {pair.name: real_at_size[i]["image"] for i, pair in enumerate(getattr(real_at_size, "pairs", []))
                   if pair.name in wanted}
    paths = write_report(result, out, spec, generated.names,
                         [resize_label(label, size) for label in generated.labels],
                         [[resize_image(image, size) for image in samples] for samples in generated.images],
                         real_images)
    _print_summary(result, paths)
    return 0


def _segmenter(args, spec, size_arg, generated_size):
    from ..eval.segmenter import SegmenterError

    try:
        return resolve_segmenter(args.evaluator, spec, size_arg, generated_size, args.dataset, args.data)
    except SegmenterError as error:
        raise UserError(str(error)) from None


def _print_summary(result: dict, paths: dict) -> None:
    summary = result["summary"]
    line = (f"{summary['name']}: mIoU {summary['miou_generated']:.3f} (real {summary['miou_real']:.3f}), "
            f"pixel accuracy {summary['pixel_accuracy_generated']:.3f} (real {summary['pixel_accuracy_real']:.3f}), "
            f"{summary['fd_name']} {summary['fd']:.2f}")
    if summary["fd_real"] is not None:
        line += f" (real-vs-real {summary['fd_real']:.2f})"
    line += f", {summary['kd_name']} {summary['kd']:.4f}"
    if summary["diversity"] is not None:
        line += f", diversity {summary['diversity']:.4f}"
    print(line)
    if result.get("source", {}).get("ema", {}).get("method") or result.get("source", {}).get("ema", {}).get("data"):
        print(f"EMA generator: {summary['ema']}")
    print(f"report: {paths['markdown']} | {paths['html']} | {paths['json']}")
