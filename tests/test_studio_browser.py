"""The studio page in a real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, served from a
uvicorn thread over tiny trained runs: paint strokes with the mouse and see the output change, switch class with a
key, undo, draw a rectangle, upload a label map, download the layout and the image; edit a photo (upload, paint,
the output keeps the photo outside the painted region)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from _gan_scenes import CAR, ROAD, SPEC, H, W, toy_label
from _studio_runs import index_png, png
from inverseg.app.server import create_app
from test_study_browser import browser, uvicorn_thread  # noqa: F401  (the module-scoped Chromium fixture)

pytestmark = pytest.mark.browser
SKY = 0
# the shown <img> as RGB rows (drawn into a canvas at its natural size)
PIXELS = """img => { const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0); const d = g.getImageData(0, 0, c.width, c.height).data;
  const rows = []; for (let y = 0; y < c.height; y++) { const row = []; for (let x = 0; x < c.width; x++) {
  const i = 4 * (y * c.width + x); row.push([d[i], d[i + 1], d[i + 2]]); } rows.push(row); } return rows; }"""


@pytest.fixture(scope="module")
def studio(studio_runs):
    from inverseg.cli.serve import load_models

    models = load_models([str(studio_runs[name]) for name in ("sesame", "spade", "oasis")], None,
                         str(studio_runs["segmenter"]), "cpu")
    with uvicorn_thread(create_app(models)) as url:
        yield url


def renders(page) -> int:
    return int(page.evaluate("document.body.dataset.renders || '0'"))


def wait_render(page, after: int) -> None:
    page.wait_for_function("n => Number(document.body.dataset.renders || 0) > n && "
                           "document.body.dataset.idle === '1'", arg=after, timeout=30_000)


def layout(page) -> np.ndarray:
    return np.array(page.evaluate("Array.from(window.studio.ids)"), np.int64).reshape(H, W)


def output(page) -> np.ndarray:
    return np.array(page.eval_on_selector("#outputs img", PIXELS), np.int64)


def canvas_point(page, row: float, col: float) -> tuple[float, float]:
    """Page coordinates of the centre of layout pixel (row, col)."""
    box = page.locator("#canvas").bounding_box()
    return box["x"] + (col + 0.5) * box["width"] / W, box["y"] + (row + 0.5) * box["height"] / H


def drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*canvas_point(page, *start))
    page.mouse.down()
    page.mouse.move(*canvas_point(page, *end), steps=12)
    page.mouse.up()


def open_model(page, url: str, name: str) -> None:
    page.goto(url)
    page.wait_for_function("document.body.dataset.ready === '1'")
    if page.input_value("#model") != name:
        count = renders(page)
        page.select_option("#model", name)
        wait_render(page, count)


def test_paint_switch_class_undo_upload_and_download(browser, studio, tmp_path):
    page = browser.new_page()
    open_model(page, studio, "oasis")  # (init gain 1: even untrained, its output shows the layout)
    assert page.locator(".swatch").count() == SPEC.num_classes and page.is_visible("#k-group")
    count = renders(page)
    page.click("#blank")  # the selected class (sky) everywhere
    wait_render(page, count)
    assert (layout(page) == SKY).all()
    blank_output = output(page)

    page.keyboard.press("9")  # the ninth class: car
    assert page.get_attribute(".swatch.selected", "data-id") == str(CAR)
    count = renders(page)
    drag(page, (16, 4), (16, 60))
    wait_render(page, count)
    painted = layout(page)
    assert (painted[16, 4:61] == CAR).all() and (painted[:8] == SKY).all()
    assert renders(page) - count <= 3  # debounced: one stroke of 12 moves is not 12 renders
    assert np.abs(output(page) - blank_output).sum() > 0  # the output follows the layout

    count = renders(page)
    page.keyboard.press("Control+z")
    wait_render(page, count)
    assert (layout(page) == SKY).all() and np.array_equal(output(page), blank_output)  # same layout, same seed
    page.keyboard.press("Control+Shift+z")
    assert np.array_equal(layout(page), painted)

    page.keyboard.press("4")  # road, with the rectangle tool
    page.keyboard.press("r")
    count = renders(page)
    drag(page, (20, 10), (27, 30))
    wait_render(page, count)
    assert (layout(page)[20:28, 10:31] == 4 - 1).all() and layout(page)[19, 20] != ROAD

    label = toy_label()[0].numpy()
    (tmp_path / "layout.png").write_bytes(index_png(label))
    count = renders(page)
    page.set_input_files("#label-file", str(tmp_path / "layout.png"))
    wait_render(page, count)
    assert np.array_equal(layout(page), label)

    with page.expect_download() as download:
        page.click("#download-layout")
    with Image.open(download.value.path()) as image:
        assert download.value.suggested_filename == "layout.png" and image.mode == "P"
        assert np.array_equal(np.asarray(image), label)
    with page.expect_download() as download:
        page.click("#download-image")
    with Image.open(download.value.path()) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), output(page))
    page.close()


def test_edit_a_photo_keeps_the_unedited_pixels(browser, studio, tmp_path):
    page = browser.new_page()
    open_model(page, studio, "sesame")
    assert page.is_visible("#edit-group") and not page.is_visible("#k-group")
    label = toy_label()[0].numpy()
    plain = np.where(label == SPEC.ignore_index, ROAD, label)
    photo = SPEC.colorize(plain)
    (tmp_path / "photo.png").write_bytes(png(photo))
    count = renders(page)
    page.set_input_files("#photo-file", str(tmp_path / "photo.png"))
    wait_render(page, count)
    assert np.array_equal(layout(page), plain)  # the segmenter's reading of the photo
    assert np.array_equal(output(page), photo)  # nothing painted yet: the photo itself

    page.keyboard.press("9")
    count = renders(page)
    drag(page, (22, 36), (22, 56))  # a car on the road
    wait_render(page, count)
    edit_mask = np.array(page.evaluate("Array.from(window.studio.editMask)"), bool).reshape(H, W)
    grown = np.zeros_like(edit_mask)  # the page asks for the painted pixels grown by one
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            grown |= np.roll(np.roll(edit_mask, dy, 0), dx, 1)
    result = output(page)
    assert edit_mask.sum() > 20 and (layout(page)[edit_mask] == CAR).all()
    assert np.array_equal(result[~grown], photo[~grown])  # unedited pixels: the photo's
    assert np.abs(result[edit_mask] - photo[edit_mask]).mean() > 5
    page.click("#clear-edit")
    assert not page.is_visible("#photo-pane")
    page.close()


@pytest.mark.slow
def test_screenshot_for_the_docs(browser, tmp_path):
    """``INVERSEG_STUDIO_RUN=RUN INVERSEG_STUDIO_PHOTO=photo.png INVERSEG_STUDIO_SHOT=out.png``: the README figure —
    the studio on a trained editing run, a photo loaded and a car painted onto the road."""
    run, photo, shot = (os.environ.get(k) for k in ("INVERSEG_STUDIO_RUN", "INVERSEG_STUDIO_PHOTO",
                                                    "INVERSEG_STUDIO_SHOT"))
    if not (run and photo and shot):
        pytest.skip("set INVERSEG_STUDIO_RUN, INVERSEG_STUDIO_PHOTO and INVERSEG_STUDIO_SHOT")
    from inverseg.cli.serve import load_models

    with uvicorn_thread(create_app(load_models([run], None, os.environ.get("INVERSEG_STUDIO_SEGMENTER"),
                                               "cpu"))) as url:
        page = browser.new_page(viewport={"width": 1100, "height": 860})
        page.goto(url)
        page.wait_for_function("document.body.dataset.ready === '1'")
        height, width = page.evaluate("[window.studio.height, window.studio.width]")
        count = renders(page)
        page.set_input_files("#photo-file", photo)
        wait_render(page, count)
        page.keyboard.press("9")
        box = page.locator("#canvas").bounding_box()
        page.mouse.move(box["x"] + 0.35 * box["width"], box["y"] + 0.78 * box["height"])
        page.mouse.down()
        page.mouse.move(box["x"] + 0.6 * box["width"], box["y"] + 0.78 * box["height"], steps=15)
        page.mouse.up()
        wait_render(page, count + 1)
        page.screenshot(path=shot)
        Image.open(shot).convert("RGB").quantize(colors=255).save(shot, optimize=True)
        assert Image.open(shot).size == (1100, 860) and height * width > 0
