"""``inverseg edit``: change a photo by its layout with an editing run (SESAME) — re-render a region, keep the rest."""

from __future__ import annotations

from pathlib import Path

from ..eval.segmenter import SegmenterError
from ..pipeline import Pipeline
from .main import UserError, add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "edit",
        "re-render the region of a photo whose layout you changed (methods that edit photos: sesame); the rest "
        "of the photo is kept",
        "  inverseg edit --checkpoint runs/sesame-camvid --image photo.png --layout edited.png --mask region.png \\\n"
        "      --out out.png\n"
        "  inverseg edit --checkpoint runs/sesame-camvid --image photo.png --layout edited.png --out out.png\n"
        "      (no --mask: re-render wherever edited.png differs from the photo's layout, read by the run's\n"
        "       evaluator segmenter or given with --original-layout)\n",
    )
    parser.add_argument("--checkpoint", required=True, help="run directory or checkpoint directory (sesame)")
    parser.add_argument("--image", required=True, help="the photo to edit")
    parser.add_argument("--layout", required=True, help="the edited layout: index PNG or colour PNG in the run's "
                                                        "palette (any size; resized to the model's)")
    parser.add_argument("--mask", help="region to re-render: a PNG, non-zero inside (default: where the layout "
                                       "changed)")
    parser.add_argument("--original-layout", help="the photo's own layout (default: read by the segmenter)")
    parser.add_argument("--segmenter", help="evaluator folder or segmenter JSON that reads the photo's layout "
                                            "(default: the evaluator of the run's label set in the cache)")
    parser.add_argument("--grow", type=int, default=2, help="grow the region by this many model pixels (default 2)")
    parser.add_argument("--size", choices=("input", "model"), default="input",
                        help="output at the photo's size (default; outside the region the original pixels) or the "
                             "model's")
    parser.add_argument("--out", required=True, help="output image file")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, …")
    parser.set_defaults(func=run)


def run(args) -> int:
    pipe = Pipeline.from_pretrained(args.checkpoint, device=args.device)  # a CheckpointError is one line already
    if not pipe.edits_photos:
        raise UserError(f"{args.checkpoint}: a {pipe.method.name} run synthesizes from layouts only; editing a photo "
                        f"needs a sesame run (inverseg train --config sesame-camvid-cpu …)")
    original = args.original_layout
    if args.mask is None and original is None:
        try:
            original = pipe.segment(args.image, pipe.load_segmenter(args.segmenter) if args.segmenter else None)
        except SegmenterError as error:
            raise UserError(f"{error} (or pass --mask / --original-layout)") from None
    try:
        result = pipe.edit(args.image, args.layout, mask=args.mask, original_layout=original, grow=args.grow,
                           size=args.size)
    except ValueError as error:
        raise UserError(str(error)) from None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.save(out)
    share = float(pipe.last_region.float().mean()) * 100
    print(f"wrote {out} ({result.size[0]}×{result.size[1]}; re-rendered {share:.1f} % of the frame)")
    return 0
