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


def write_page(folder: Path, title: str, intro: str, figures: list[tuple[str, str]]) -> Path:
    """A self-contained HTML page of (caption, image file name) figures inside ``folder``."""
    items = "\n".join(f'<figure><figcaption>{html.escape(caption)}</figcaption><img src="{html.escape(name)}">'
                      f"</figure>" for caption, name in figures)
    return atomic_write_text(folder / "index.html", f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1em}} img{{max-width:100%;image-rendering:pixelated}}
figure{{margin:0 0 2em 0}} figcaption{{font-weight:bold;margin-bottom:.3em}}</style></head>
<body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>
{items}
</body></html>
""")


def write_gallery(run_dir: Path, step: int, image: np.ndarray, title: str) -> Path:
    samples = run_dir / "samples"
    path = save_png(image, samples / f"step_{step:07d}.png")
    pages = sorted(samples.glob("step_*.png"), reverse=True)
    write_page(samples, title, "Fixed validation layouts, newest first: coloured label | output(s) | reference.",
               [(f"step {int(p.stem.split('_')[1])}", p.name) for p in pages])
    return path
