"""Evaluation reports (JSON + Markdown + HTML with a per-class IoU chart and a sample grid) and the comparison
table of several evaluations.

Everything is drawn with PIL (no matplotlib).  A report is a set of files sharing one stem, e.g.
``RUN/eval/eval_val.{json,md,html}``, ``eval_val_iou.png``, ``eval_val_samples.png`` (and its tiles in
``eval_val_samples/``).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..labels import LabelSpec
from ..utils.images import fit_height, grid, save_png, to_uint8
from ..utils.io import atomic_write_json, atomic_write_text

GENERATED_COLOUR = (52, 101, 164)
REAL_COLOUR = (170, 170, 170)


def _number(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


# ---------------------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------------------
def iou_chart(generated: dict, real: dict, title: str = "per-class IoU") -> np.ndarray:
    """Horizontal bars per class: generated (blue) over real (grey), value printed at the bar's end."""
    names = list(generated)
    label_width, bar_width, row = 170, 360, 26
    height = 34 + row * len(names) + 20
    image = Image.new("RGB", (label_width + bar_width + 70, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((8, 6), title, fill=(0, 0, 0))
    draw.rectangle((label_width, 20, label_width + 10, 28), fill=GENERATED_COLOUR)
    draw.text((label_width + 14, 19), "generated", fill=(0, 0, 0))
    draw.rectangle((label_width + 100, 20, label_width + 110, 28), fill=REAL_COLOUR)
    draw.text((label_width + 114, 19), "real", fill=(0, 0, 0))
    top = 34
    for name in names:
        draw.text((8, top + 6), name[:26], fill=(0, 0, 0))
        for offset, value, colour in ((0, generated[name], GENERATED_COLOUR), (11, real.get(name), REAL_COLOUR)):
            y = top + 2 + offset
            if value is None:
                draw.text((label_width + 2, y - 2), "n/a", fill=(120, 120, 120))
                continue
            end = label_width + round(bar_width * max(0.0, min(1.0, value)))
            draw.rectangle((label_width, y, max(label_width + 1, end), y + 9), fill=colour)
            draw.text((end + 4, y - 2), f"{value:.2f}", fill=(0, 0, 0))
        top += row
    for tick in range(0, 11, 2):
        x = label_width + round(bar_width * tick / 10)
        draw.line((x, 32, x, top), fill=(225, 225, 225))
        draw.text((x - 6, top + 4), f"{tick / 10:.1f}", fill=(90, 90, 90))
    return np.asarray(image)


def sample_grid(spec: LabelSpec, names: list[str], layouts: list, generated: list[list], real: dict,
                count: int = 6, max_k: int = 4, height: int = 96) -> np.ndarray:
    """Rows: coloured layout | generated sample(s) | real image (when the split has one of that name)."""
    rows = []
    for index in sample_indices(names, count):
        row = [fit_height(spec.colorize(layouts[index]), height, nearest=True)]
        row += [fit_height(to_uint8(image), height) for image in generated[index][:max_k]]
        if names[index] in real:
            row.append(fit_height(to_uint8(real[names[index]]), height))
        rows.append(row)
    k = min(max_k, len(generated[0]))
    titles = ["layout", *(["generated"] if k == 1 else [f"sample {i}" for i in range(k)]), "real"]
    return grid(rows, titles=titles)


def sample_indices(names: list[str], count: int) -> list[int]:
    """``count`` layouts spread evenly over the split (the same ones in every report of that split)."""
    step = max(1, len(names) // count)
    return list(range(0, len(names), step))[:count]


def save_sample_tiles(folder: Path, spec: LabelSpec, names: list[str], layouts: list, generated: list[list],
                      real: dict, count: int = 6) -> dict:
    """The sample grid's tiles as PNGs (``NAME_layout``, ``NAME_generated``, ``NAME_real``), so that
    ``inverseg compare --figure`` can put several runs' outputs for the same layouts side by side."""
    picked = sample_indices(names, count)
    for index in picked:
        name = names[index]
        save_png(spec.colorize(layouts[index]), folder / f"{name}_layout.png")
        save_png(to_uint8(generated[index][0]), folder / f"{name}_generated.png")
        if name in real:
            save_png(to_uint8(real[name]), folder / f"{name}_real.png")
    return {"folder": str(folder), "names": [names[index] for index in picked]}


def compare_figure(results: list[dict], rows: int = 4, height: int = 96) -> np.ndarray:
    """Layout | each evaluation's output | real image, for layouts every evaluation's report kept."""
    tiles = [result.get("report", {}).get("sample_tiles") for result in results]
    missing = [result["_file"] for result, tile in zip(results, tiles) if not tile]
    if missing:
        raise ValueError(f"{missing[0]}: no sample tiles in this evaluation (made before they existed); "
                         f"fix: run 'inverseg evaluate' again")
    common = [name for name in tiles[0]["names"] if all(name in tile["names"] for tile in tiles)]
    if not common:
        raise ValueError("the evaluations share no sample layouts (different datasets or splits?)")

    def tile(folder: str, name: str, kind: str, nearest: bool = False) -> np.ndarray | None:
        path = Path(folder) / f"{name}_{kind}.png"
        return fit_height(np.asarray(Image.open(path).convert("RGB")), height, nearest) if path.is_file() else None

    first = tiles[0]["folder"]
    grid_rows = []
    for name in common[:rows]:
        row = [tile(first, name, "layout", nearest=True)]
        row += [tile(t["folder"], name, "generated") for t in tiles]
        real = tile(first, name, "real")
        grid_rows.append([t for t in row + [real] if t is not None])
    titles = ["layout", *(r["summary"]["name"] or r["summary"]["method"] for r in results)]
    if len(grid_rows[0]) > len(titles):
        titles.append("real")
    return grid(grid_rows, titles=titles)


# ---------------------------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------------------------
def _summary_rows(result: dict) -> list[tuple[str, str, str]]:
    metrics = result["metrics"]
    seg_gen, seg_real = metrics["segmentation"]["generated"], metrics["segmentation"]["real"]
    frechet, kernel = metrics["frechet"], metrics["kernel"]
    ref = frechet.get("reference_split", "train")
    rows = [
        ("mIoU ↑", _number(seg_gen["miou"]), _number(seg_real["miou"])),
        ("pixel accuracy ↑", _number(seg_gen["pixel_accuracy"]), _number(seg_real["pixel_accuracy"])),
        ("mean class accuracy ↑", _number(seg_gen["mean_accuracy"]), _number(seg_real["mean_accuracy"])),
        (f"{frechet['name']} ↓", _number(frechet["generated_vs_real"], 2),
         f"{_number(frechet.get('real_reference_vs_real'), 2)} (real {ref} vs real)"),
        (f"{kernel['name']} ↓", _number(kernel["generated_vs_real"]["mean"], 4),
         f"{_number((kernel.get('real_reference_vs_real') or {}).get('mean'), 4)} (real {ref} vs real)"),
    ]
    if metrics["diversity"]:
        diversity = metrics["diversity"]
        rows.append((f"diversity ({diversity['name']}) ↑", _number(diversity["mean"], 4), "—"))
    return rows


def _protocol_rows(result: dict) -> list[tuple[str, str]]:
    protocol, dataset = result["protocol"], result["dataset"]
    evaluator, extractor = protocol["evaluator"], protocol["feature_extractor"]
    mapping = protocol["id_mapping"]
    return [
        ("dataset", f"{dataset['kind']} ({dataset['label_set']}, {dataset['num_classes']} classes), split "
                    f"{dataset['split']}, {dataset['path']}"),
        ("evaluation resolution", "{}×{} (H×W); generated at {}×{}".format(*protocol["resolution"],
                                                                          *protocol["generated_size"])),
        ("real images", protocol["real_image_resize"]),
        ("generated images", protocol["generated_image_resize"]),
        ("labels", f"resized {protocol['label_resize']}; ignore id {protocol['ignore_index']} excluded"),
        ("evaluator", f"{evaluator.get('name')} ({evaluator.get('kind')}), sha256 {evaluator.get('sha256')}"),
        ("id mapping", mapping if isinstance(mapping, str) else json.dumps(mapping)),
        ("feature extractor", f"{extractor['name']} {extractor['dim']}-d, {extractor['input']}; "
                              f"{extractor['weights']}; sha256 {extractor['sha256']}"),
        ("kernel distance", f"unbiased MMD², kernel {protocol['kid']['kernel']}, {protocol['kid']['subsets']} "
                            f"subsets of {protocol['kid']['subset_size']}"),
        ("images", ", ".join(f"{k} {v}" for k, v in protocol["num_images"].items())),
        ("samples per layout", f"{protocol['samples_per_layout']} ({protocol['scored_sample']})"),
        ("perception network in training", result.get("summary", {}).get("perception", "—")),
        ("EMA generator", result.get("summary", {}).get("ema", "—")),
        *([("diversity network", (result["metrics"]["diversity"].get("weights") or {}).get("summary")
            or result["metrics"]["diversity"]["backbone"])] if result["metrics"]["diversity"] else []),
    ]


def _class_rows(result: dict) -> list[tuple[str, str, str]]:
    segmentation = result["metrics"]["segmentation"]
    return [(name, _number(value), _number(segmentation["real"]["per_class_iou"].get(name)))
            for name, value in segmentation["generated"]["per_class_iou"].items()]


def _title(result: dict) -> str:
    source = result.get("source", {})
    return f"Evaluation — {source.get('name') or source.get('method') or 'images'} on " \
           f"{result['dataset']['kind']} {result['dataset']['split']}"


def markdown_report(result: dict, chart: str, samples: str) -> str:
    lines = [f"# {_title(result)}", ""]
    source = result.get("source", {})
    if source:
        lines += ["Source: " + ", ".join(f"{k} `{v}`" for k, v in source.items()
                                         if v not in (None, "") and not isinstance(v, dict)), ""]
    lines += ["| metric | generated | real reference |", "|---|---:|---:|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in _summary_rows(result)]
    lines += ["", "## Protocol", "", "| | |", "|---|---|"]
    lines += [f"| {a} | {b.replace('|', '/')} |" for a, b in _protocol_rows(result)]
    lines += ["", "## Per-class IoU", "", f"![per-class IoU]({chart})", "", "| class | generated | real |",
              "|---|---:|---:|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in _class_rows(result)]
    lines += ["", "## Samples", "", f"![samples]({samples})", ""]
    return "\n".join(lines)


def html_report(result: dict, chart: str, samples: str) -> str:
    def table(rows, header=None) -> str:
        head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table>{head}{body}</table>"

    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(_title(result))}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:70em}} table{{border-collapse:collapse;margin:.5em 0 1.5em}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}} img{{max-width:100%}}</style></head>
<body><h1>{html.escape(_title(result))}</h1>
{table(_summary_rows(result), ["metric", "generated", "real reference"])}
<h2>Protocol</h2>{table(_protocol_rows(result))}
<h2>Per-class IoU</h2><img src="{html.escape(chart)}" alt="per-class IoU">
{table(_class_rows(result), ["class", "generated", "real"])}
<h2>Samples</h2><img src="{html.escape(samples)}" alt="samples">
</body></html>
"""


def write_report(result: dict, json_path: str | Path, spec: LabelSpec, names: list[str], layouts: list,
                 generated: list[list], real: dict) -> dict:
    """Write ``STEM.json``, ``STEM.md``, ``STEM.html``, ``STEM_iou.png``, ``STEM_samples.png``; returns paths."""
    json_path = Path(json_path)
    folder, stem = json_path.parent, json_path.stem
    segmentation = result["metrics"]["segmentation"]
    chart = save_png(iou_chart(segmentation["generated"]["per_class_iou"], segmentation["real"]["per_class_iou"]),
                     folder / f"{stem}_iou.png")
    samples = save_png(sample_grid(spec, names, layouts, generated, real), folder / f"{stem}_samples.png")
    tiles = save_sample_tiles(folder / f"{stem}_samples", spec, names, layouts, generated, real)
    paths = {"json": str(json_path), "markdown": str(folder / f"{stem}.md"), "html": str(folder / f"{stem}.html"),
             "iou_chart": str(chart), "samples": str(samples), "sample_tiles": tiles}
    result["report"] = paths
    atomic_write_text(paths["markdown"], markdown_report(result, chart.name, samples.name))
    atomic_write_text(paths["html"], html_report(result, chart.name, samples.name))
    atomic_write_json(json_path, result)
    return paths


# ---------------------------------------------------------------------------------------------------------
# Comparison table
# ---------------------------------------------------------------------------------------------------------
def find_result(path: str | Path) -> Path:
    """A result JSON, or a run directory (→ its newest ``eval/*.json``)."""
    path = Path(path)
    if path.is_file():
        return path
    candidates = sorted((path / "eval").glob("*.json"), key=lambda p: p.stat().st_mtime) \
        if (path / "eval").is_dir() else []
    if not candidates:
        raise FileNotFoundError(f"{path}: no evaluation found (expected a result JSON or RUN_DIR/eval/*.json); "
                                f"fix: inverseg evaluate --checkpoint {path} --dataset KIND --data PATH")
    return candidates[-1]


def load_result(path: str | Path) -> dict:
    file = find_result(path)
    result = json.loads(file.read_text(encoding="utf-8"))
    if "summary" not in result or "metrics" not in result:
        raise ValueError(f"{file}: not an inverseg evaluation result")
    result["_file"] = str(file)
    return result


def _parameters(value) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1e6:.1f}M" if value >= 1e5 else f"{value / 1e3:.1f}K"


def compare_table(results: list[dict], markdown: bool = False) -> str:
    """One table of several evaluations (the FID/mIoU table of the papers), plus notes when the protocols
    differ — numbers measured with different evaluators or feature extractors are not comparable."""
    summaries = [r["summary"] for r in results]
    fd_names = sorted({s["fd_name"] for s in summaries})
    kd_names = sorted({s["kd_name"] for s in summaries})
    fd_header = fd_names[0] if len(fd_names) == 1 else "FD"
    kd_header = kd_names[0] if len(kd_names) == 1 else "KD"
    header = ["method", "params", "steps", "train CPU-min", f"{fd_header}↓", f"{kd_header}↓", "mIoU gen↑", "mIoU real", "pix acc gen↑",
              "diversity↑"]
    rows = []
    for summary in summaries:
        fd = _number(summary["fd"], 1) + ("" if len(fd_names) == 1 else f" ({summary['fd_name']})")
        kd = _number(summary["kd"], 4) + ("" if len(kd_names) == 1 else f" ({summary['kd_name']})")
        cpu_seconds = summary.get("train_cpu_seconds")
        rows.append([summary["name"] or summary["method"] or "?", _parameters(summary["parameters"]),
                     _number(summary.get("step"), 0), _number(None if cpu_seconds is None else cpu_seconds / 60, 1),
                     fd, kd,
                     _number(_percent(summary["miou_generated"]), 1), _number(_percent(summary["miou_real"]), 1),
                     _number(_percent(summary["pixel_accuracy_generated"]), 1), _number(summary["diversity"], 4)])
    notes = [f"mIoU and pixel accuracy in %; {fd_header} real-vs-real: " +
             ", ".join(sorted({_number(s['fd_real'], 1) for s in summaries}))]
    for key, label in (("evaluator_sha256", "evaluators"), ("extractor_sha256", "feature extractors"),
                       ("dataset", "datasets/splits")):
        values = {str(s[key]) for s in summaries}
        if len(values) > 1:
            notes.append(f"WARNING: different {label} ({', '.join(v[:12] for v in sorted(values))}) — these rows are "
                         f"not comparable")
        elif key == "evaluator_sha256":
            notes.append(f"evaluator sha256 {values.pop()[:16]}…, resolution "
                         f"{summaries[0]['resolution'][0]}×{summaries[0]['resolution'][1]}, "
                         f"{summaries[0]['dataset']}")
    for s in summaries:
        if s.get("init_from"):
            before = s.get("init_from_cpu_seconds")
            notes.append(f"{s['name'] or s['method']} started from the weights of {s['init_from']}" +
                         (f" (+{before / 60:.1f} train CPU-min there, not in its row)" if before else ""))
    notes.append("perception networks in training: " + "; ".join(
        f"{s['name'] or s['method'] or '?'} — {s.get('perception', 'not recorded (evaluated before the record)')}"
        for s in summaries))
    resolutions = {tuple(s["resolution"]) for s in summaries}
    if len(resolutions) > 1:
        notes.append("WARNING: different evaluation resolutions — these rows are not comparable")
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines + [""] + [f"{note}  " for note in notes]) + "\n"
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
                       for i, (cell, width) in enumerate(zip(row, widths))) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines + [""] + notes) + "\n"


def _percent(value):
    return None if value is None else 100.0 * value
