"""``inverseg export``: a trained run's inference network as a file other runtimes can run (ONNX)."""

from __future__ import annotations

from pathlib import Path

from .main import UserError, add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "export", "export a run's inference network (ONNX, for onnxruntime)",
        "  inverseg export --checkpoint runs/crn-camvid --format onnx --out crn.onnx\n"
        "  inverseg synthesize --model crn.onnx --labels ../shared/data/camvid/valannot --out out/\n"
        "  inverseg export --checkpoint runs/spade --out spade.onnx   # also writes spade.style.onnx (VAE)\n",
    )
    parser.add_argument("--checkpoint", required=True, help="run directory or checkpoint directory")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="file format (default onnx)")
    parser.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--no-ema", action="store_true", help="export the raw generator, not its EMA average")
    parser.add_argument("--no-check", action="store_true",
                        help="skip running the written file once on onnxruntime against the eager network")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest |onnx − eager| pixel difference the check accepts (default 1e-3; images are "
                             "in [-1, 1], one uint8 level ≈ 7.8e-3)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..export import export_onnx
    from ..export.onnx import check_export
    from ..pipeline import Pipeline

    out = Path(args.out)
    if out.suffix != ".onnx":
        raise UserError(f"--out {out}: an ONNX file name ends in .onnx; fix: --out {out.with_suffix('.onnx')}")
    pipe = Pipeline.from_pretrained(args.checkpoint, use_ema=not args.no_ema)
    with torch.no_grad():
        written = export_onnx(pipe, out, opset=args.opset)
    if not args.no_check:
        difference = check_export(pipe, out, tolerance=args.tolerance)
        print(f"checked on onnxruntime: max |onnx − eager| = {difference:.2e} on random inputs")
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB)")
    print(f"use it: inverseg synthesize --model {out} --labels LABELS --out OUT")
    return 0
