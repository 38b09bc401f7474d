"""The study's web server (FastAPI): one page, a small JSON API, images streamed from disk.

The browser never learns which method is on which side: images are served as ``/image/TRIAL/left`` and
``/image/TRIAL/right`` and the server keeps the assignment (the trial).  The running tally (``/api/results``) is
served only with the admin token printed when the server starts: a rater who saw it could be biased.  Every
refused request is a 4xx with ``{"error": "..."}``; nothing a client sends can make the server answer 500.
"""

from __future__ import annotations

import json
import math
import random
import re
import secrets
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from .store import StudyError, StudyStore, summarize
from ...utils.web import error, json_api

STATIC = Path(__file__).resolve().parent / "static"
RATER_PATTERN = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MAX_MS = 24 * 3600 * 1000  # a response time above a day is a broken client, not a rater
MAX_BODY = 4096


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it exceeds ``limit`` bytes (never buffers a huge upload)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def create_app(store: StudyStore, pair_ids: list[int], time_limit: float | None = None,
               rng: random.Random | None = None, title: str = "Which image is more realistic?",
               admin_token: str | None = None) -> FastAPI:
    """The app serving ``pair_ids`` (registered in ``store``); ``time_limit`` seconds hides the images.

    ``admin_token`` guards ``/api/results`` (``Authorization: Bearer TOKEN`` or ``?token=TOKEN``); without one a
    random token is made, readable as ``app.state.admin_token`` (the CLI prints it).
    """
    if not pair_ids:
        raise ValueError("a study needs at least one pair")
    if time_limit is not None and not (time_limit > 0 and math.isfinite(time_limit)):
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit}")
    rng = rng or random.SystemRandom()
    active = set(pair_ids)
    app = json_api("inverseg preference study")
    app.state.admin_token = admin_token or secrets.token_urlsafe(16)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-store"})

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        path = STATIC / name
        if name not in {p.name for p in STATIC.iterdir()}:  # a fixed set of files, never a path from the client
            return error(404, f"no static file {name!r}")
        return FileResponse(path, headers={"Cache-Control": "no-store"})

    @app.get("/api/config")
    def config():
        return {"title": title, "time_limit_ms": None if time_limit is None else round(time_limit * 1000),
                "total": len(pair_ids)}

    @app.get("/api/next")
    def next_trial(rater: str | None = None):
        if rater is None or not RATER_PATTERN.fullmatch(rater):
            return error(400, "pass ?rater=ID (1-64 characters: letters, digits, _ . @ -)")
        trial = store.next_trial(rater, pair_ids, rng)
        completed = store.progress(rater, pair_ids)
        base = {"rater": rater, "completed": completed, "total": len(pair_ids),
                "time_limit_ms": None if time_limit is None else round(time_limit * 1000)}
        if trial is None:
            return {**base, "done": True}
        return {**base, "done": False, "trial": trial["id"], "pair": trial["pair_id"],
                "left": f"/image/{trial['id']}/left", "right": f"/image/{trial['id']}/right"}

    @app.get("/image/{trial_id}/{side}")
    def image(trial_id: str, side: str):
        if side not in ("left", "right"):
            return error(404, "side must be 'left' or 'right'")
        trial = store.trial(trial_id)
        if trial is None or trial["pair_id"] not in active:
            return error(404, f"unknown trial {trial_id!r}")
        path = Path(trial[f"{side}_image"])
        if not path.is_file():
            return error(404, f"image of trial {trial_id!r} is missing on disk")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/api/vote")
    async def vote(request: Request):
        body = await read_limited(request, MAX_BODY)
        if body is None:
            return error(413, "request body too large")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return error(400, "body must be JSON: {\"trial\": ID, \"choice\": \"left\"|\"right\", \"ms\": N}")
        if not isinstance(data, dict):
            return error(400, "body must be a JSON object")
        trial_id, choice, ms = data.get("trial"), data.get("choice"), data.get("ms")
        if not isinstance(trial_id, str) or not trial_id:
            return error(400, "'trial' must be the trial id string from /api/next")
        if choice not in ("left", "right"):
            return error(400, "'choice' must be \"left\" or \"right\"")
        # the range check also refuses NaN and ±inf, and never converts a huge JSON integer to float
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0 <= ms <= MAX_MS:
            return error(400, f"'ms' must be the response time in milliseconds (0 to {MAX_MS})")
        # SQLite may wait for a lock: keep that off the event loop
        trial = await run_in_threadpool(store.trial, trial_id)
        if trial is None or trial["pair_id"] not in active:
            return error(404, f"unknown trial {trial_id!r}")
        rater = data.get("rater")
        if rater is not None and rater != trial["rater"]:
            return error(403, "this trial was assigned to another rater")
        try:
            stored = await run_in_threadpool(store.record_vote, trial_id, choice, round(ms))
        except StudyError as refused:
            return error(refused.status, str(refused))
        completed = await run_in_threadpool(store.progress, stored["rater"], pair_ids)
        return {"ok": True, "completed": completed, "total": len(pair_ids)}

    @app.get("/api/results")
    def results(request: Request, token: str | None = None):
        header = request.headers.get("authorization", "")
        given = token or (header[7:] if header.lower().startswith("bearer ") else "")
        if not secrets.compare_digest(given.encode(), app.state.admin_token.encode()):
            return error(401, "the running tally needs the admin token printed when the server started: "
                              "?token=TOKEN or 'Authorization: Bearer TOKEN' (or run: inverseg study results DB)")
        return summarize(store)

    return app
