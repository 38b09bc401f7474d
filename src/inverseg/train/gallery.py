"""A static HTML gallery in the run directory: fixed validation layouts, sampled as training goes on.

Each sampling writes ``samples/step_NNNNNNN.png`` (rows: coloured label | output(s) | [extra] | reference) and
rewrites ``samples/index.html`` (newest first) — open it in a browser, no server needed.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from ..utils.images import grid, save_png
from ..utils.io import atomic_write_text


def sample_grid(labels: list[np.ndarray], outputs: list[list[np.ndarray]], references: list[np.ndarray | None],
                extras: list[list[np.ndarray]] | None = None, extra_titles: list[str] | None = None) -> np.ndarray:
    rows = []
    for index, label in enumerate(labels):
        row = [label, *(extras[index] if extras else []), *outputs[index]]
        if references[index] is not None:
            row.append(references[index])
        rows.append(row)
    k = len(outputs[0])
    titles = ["label", *(extra_titles or []), *(["output"] if k == 1 else [f"output {i + 1}" for i in range(k)])]
    if references[0] is not None:
        titles.append("reference")
    return grid(rows, titles=titles)


def write_gallery(run_dir: Path, step: int, image: np.ndarray, title: str) -> Path:
    samples = run_dir / "samples"
    path = save_png(image, samples / f"step_{step:07d}.png")
    pages = sorted(samples.glob("step_*.png"), reverse=True)
    items = "\n".join(
        f'<figure><figcaption>step {int(p.stem.split("_")[1])}</figcaption><img src="{p.name}"></figure>'
        for p in pages
    )
    atomic_write_text(samples / "index.html", f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1em}} img{{max-width:100%;image-rendering:pixelated}}
figure{{margin:0 0 2em 0}} figcaption{{font-weight:bold;margin-bottom:.3em}}</style></head>
<body><h1>{html.escape(title)}</h1><p>Fixed validation layouts, newest first:
coloured label | output(s) | reference.</p>
{items}
</body></html>
""")
    return path
