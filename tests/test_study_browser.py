"""The preference study in a real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

The first test runs the real ``inverseg study serve`` command on a free port, votes with two raters through
buttons and the ←/→ keys, and checks that ``inverseg study results`` counts exactly those votes.  The second
serves a time-limited study from a uvicorn thread and checks the images disappear but the vote still counts.
Which method is on which side is found by downloading the shown image and comparing it with the files.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inverseg.cli.main import main

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# records (element id, hidden, page time in ms) whenever an element's hidden attribute changes
HIDDEN_LOG = """
window.hiddenLog = [];
new MutationObserver((records) => {
  for (const r of records) window.hiddenLog.push([r.target.id, r.target.hidden, performance.now()]);
}).observe(document, {subtree: true, attributes: true, attributeFilter: ["hidden"]});
"""
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the server is local, whatever the env
NAMES = ("scene_a", "scene_b", "scene_c", "scene_d")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing; fix: make chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # launch() runs on a fresh temporary profile; each new_context() has its own localStorage (one rater)
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def write_methods(root: Path, names=NAMES) -> dict[bytes, str]:
    """Folders crn/ and sims/ of flat-colour PNGs; returns image bytes → method name."""
    methods = {}
    for method, colour in (("crn", (200, 40, 40)), ("sims", (40, 40, 200))):
        (root / method).mkdir(parents=True)
        for index, name in enumerate(names):
            path = root / method / f"{name}.png"
            Image.fromarray(np.full((48, 64, 3), np.add(colour, 12 * index), np.uint8)).save(path)
            methods[path.read_bytes()] = method
    return methods


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {process.stderr.read()}")
        try:
            with NO_PROXY.open(url + "api/config", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up in {timeout} s")


@contextmanager
def uvicorn_thread(app):
    """A real uvicorn server on a free port in a background thread."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    try:
        wait_until_up(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def shown_methods(page, methods: dict[bytes, str]) -> dict[str, str]:
    """side → method, by downloading what the page shows."""
    return {side: methods[page.request.get(page.eval_on_selector(f"#{side}-image", "img => img.src")).body()]
            for side in ("left", "right")}


def wait_for_trial(page, previous: str | None) -> None:
    page.wait_for_function(
        "previous => !document.getElementById('done').hidden || "
        "(document.body.dataset.trial && document.body.dataset.trial !== previous && "
        "!document.getElementById('left-button').disabled)", arg=previous)


def rate(page, url: str, methods: dict[bytes, str], plan: list[tuple[str, str]]) -> list[dict]:
    """Prefer the planned method in each trial, answering by 'click' or 'key'; returns what was done."""
    page.goto(url)
    wait_for_trial(page, None)
    done = []
    for number, (wanted, how) in enumerate(plan):
        assert page.inner_text("#progress") == f"{number} of {len(NAMES)} rated"
        sides = shown_methods(page, methods)
        assert sorted(sides.values()) == ["crn", "sims"]
        side = "left" if sides["left"] == wanted else "right"
        trial = page.evaluate("document.body.dataset.trial")
        if how == "click":
            page.click(f"#{side}-button")
        else:
            page.keyboard.press("ArrowLeft" if side == "left" else "ArrowRight")
        wait_for_trial(page, trial)
        done.append({"trial_id": trial, "choice": side, "chosen": wanted})
    return done


def test_votes_through_the_page_are_the_results(browser, tmp_path, capsys):
    methods = write_methods(tmp_path)
    db, port = tmp_path / "study.sqlite", free_port()
    command = [sys.executable, "-m", "inverseg.cli.main", "study", "serve", "--a", str(tmp_path / "crn"),
               "--b", str(tmp_path / "sims"), "--db", str(db), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, process)
        first = browser.new_context()
        page = first.new_page()
        votes = rate(page, url, methods, [("crn", "click"), ("crn", "click"), ("sims", "key"), ("crn", "key")])
        assert page.is_visible("#done") and page.inner_text("#progress") == "4 of 4 rated"
        assert not page.is_visible("#study")
        rater_one = page.inner_text("#rater")
        first.close()
        second = browser.new_context()  # fresh localStorage: a new random rater id
        page = second.new_page()
        votes += rate(page, url, methods, [("sims", "key"), ("crn", "click")])
        rater_two = page.inner_text("#rater")
        second.close()
    finally:
        process.terminate()
        process.wait(10)
    assert rater_one != rater_two and rater_one.startswith("r-")

    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        stored = [dict(row) for row in connection.execute("SELECT * FROM votes ORDER BY id")]
    assert [{k: row[k] for k in ("trial_id", "choice", "chosen")} for row in stored] == votes
    assert [row["rater"] for row in stored] == [rater_one] * 4 + [rater_two] * 2
    assert len({row["pair_id"] for row in stored[:4]}) == 4  # rater one saw every layout once
    assert all(0 <= row["ms"] < 60_000 for row in stored)

    assert main(["study", "results", str(db), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["comparisons"]
    assert (row["method_a"], row["method_b"]) == ("crn", "sims")
    assert (row["votes"], row["wins_a"], row["wins_b"], row["raters"]) == (6, 4, 2, 2)
    assert row["p_value"] == 0.6875  # 2·(1 + 6 + 15)/64


def test_time_limit_hides_the_images_but_the_answer_counts(browser, tmp_path):
    from inverseg.eval.study import StudyStore
    from inverseg.eval.study.server import create_app
    from inverseg.eval.study.sources import match, open_source

    methods = write_methods(tmp_path, names=NAMES[:2])
    store = StudyStore(tmp_path / "study.sqlite")
    a, b = open_source(tmp_path / "crn"), open_source(tmp_path / "sims")
    pair_ids = store.add_pairs(store.ensure_study(a.name, b.name), match(a, b))
    with uvicorn_thread(create_app(store, pair_ids, time_limit=1.0)) as url:
        context = browser.new_context()
        context.add_init_script(HIDDEN_LOG)
        page = context.new_page()
        page.goto(url + "?rater=timed-rater")
        wait_for_trial(page, None)
        assert page.is_visible("#time-note") and page.inner_text("#time-seconds") == "1"
        sides = shown_methods(page, methods)
        page.wait_for_selector("#left-image", state="hidden", timeout=10_000)
        assert not page.is_visible("#right-image") and page.is_visible("#left-gone")
        # page time, not test time (a loaded machine may be slow to ask): shown, then hidden ≥ 1 s later
        events = [(hidden, ms) for target, hidden, ms in page.evaluate("window.hiddenLog") if target == "left-image"]
        assert [hidden for hidden, _ in events][-2:] == [False, True]
        assert events[-1][1] - events[-2][1] >= 995
        assert page.is_enabled("#right-button")
        trial = page.evaluate("document.body.dataset.trial")
        page.keyboard.press("ArrowRight")
        wait_for_trial(page, trial)
        assert page.inner_text("#progress") == "1 of 2 rated"
        assert page.is_visible("#left-image")  # the next pair is shown again
        context.close()
    (vote,) = store.votes()
    assert (vote["rater"], vote["choice"], vote["chosen"]) == ("timed-rater", "right", sides["right"])
    assert vote["ms"] >= 1000
