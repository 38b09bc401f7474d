"""``inverseg synthesize``: label maps (a file or a folder) → images, named after the inputs."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from ..data.base import list_files
from ..pipeline import Pipeline
from .main import UserError, add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "synthesize", "synthesize images from label maps with a trained run",
        "  inverseg synthesize --checkpoint runs/crn-camvid --labels ../shared/data/camvid/valannot --out out/\n"
        "  inverseg synthesize --checkpoint runs/crn-div --labels layout.png --out out/ --k 9\n"
        "  inverseg synthesize --checkpoint runs/spade --labels layout.png --out out/ --style-image photo.jpg\n"
        "  inverseg synthesize --checkpoint runs/pix2pixhd --labels layout.png --out out/ --style 3\n"
        "  inverseg synthesize --model crn.onnx --labels layout.png --out out/   # an 'inverseg export' file\n",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="run directory or checkpoint directory (PyTorch)")
    source.add_argument("--model", help="an ONNX file written by 'inverseg export' (runs on onnxruntime)")
    parser.add_argument("--backend", choices=("torch", "onnx"),
                        help="torch (with --checkpoint) or onnx (with --model); default: the one the source needs")
    parser.add_argument("--labels", required=True, help="label PNG (index or colour-coded) or a folder of them")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--k", type=int, default=1, help="images per label map (default 1)")
    parser.add_argument("--size", choices=("model", "input"), default="model",
                        help="output at the model's resolution (default) or resized to the input's")
    parser.add_argument("--seed", type=int, help="random seed for methods with random appearance")
    parser.add_argument("--style-image", help="reference photo whose appearance to copy (runs with an image encoder: "
                                              "SPADE, SAFM, CC-FPSE with vae.enabled; pix2pixHD with features)")
    parser.add_argument("--style", type=int, help="appearance cluster for every instance (pix2pixHD features)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, …")
    parser.set_defaults(func=run)


def open_pipeline(args) -> Pipeline:
    """--checkpoint → the PyTorch pipeline; --model → the same Pipeline on onnxruntime (no checkpoint needed)."""
    if args.checkpoint and args.checkpoint.endswith(".onnx"):
        raise UserError(f"--checkpoint {args.checkpoint} is an ONNX file; fix: --model {args.checkpoint}")
    backend = args.backend or ("onnx" if args.model else "torch")
    if backend == "onnx" and args.checkpoint:
        raise UserError(f"--backend onnx runs an exported file, not a checkpoint; fix: inverseg export --checkpoint "
                        f"{args.checkpoint} --format onnx --out model.onnx, then --model model.onnx")
    if backend == "torch" and args.model:
        raise UserError(f"--model {args.model} is an ONNX file: it runs with --backend onnx (the default for --model)")
    if backend == "onnx":
        if args.device != "cpu":
            raise UserError(f"--backend onnx runs on the CPU; fix: drop --device {args.device}")
        pipe = Pipeline.from_onnx(args.model)
        if pipe.method.name == "sims":
            print("note: the ONNX SIMS has no memory bank: it renders from an empty canvas (the retrieved canvases "
                  "need --checkpoint RUN)", file=sys.stderr)
        return pipe
    return Pipeline.from_pretrained(args.checkpoint, device=args.device)  # a CheckpointError is one line already


def run(args) -> int:
    pipe = open_pipeline(args)
    if args.k < 1:
        raise UserError(f"--k must be at least 1, got {args.k}")
    try:  # before any file is read: a deterministic run asked for --k 4 is one line, not a traceback
        pipe.check_options(k=args.k, style_image=args.style_image is not None, style=args.style is not None)
    except ValueError as problem:
        raise UserError(str(problem)) from None
    source = Path(args.labels)
    if source.is_dir():
        files = list_files(source, (".png", ".bmp", ".tif", ".tiff"))
        if not files:
            raise UserError(f"{source}: no label PNGs in this folder")
    else:  # a file, or a path that is not one: the label reader names what is wrong with it
        files = [source]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    style = {"style_image": args.style_image} if args.style_image else {}
    if args.style is not None:
        style["style"] = args.style
    written = 0
    for path in tqdm(files, desc="synthesize", unit="map", file=sys.stderr, disable=len(files) < 2 or None):
        images = pipe(path, k=args.k, seed=args.seed, size=args.size, **style)
        for index, image in enumerate(images):
            name = path.stem if args.k == 1 else f"{path.stem}_{index}"
            image.save(out / f"{name}.png")
            written += 1
        for suffix, extra in getattr(pipe, "last_extras", {}).items():
            extra.save(out / f"{path.stem}_{suffix}.png")
    print(f"wrote {written} images to {out}")
    return 0
