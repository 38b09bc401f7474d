"""The studio's web server (FastAPI): paint a layout and watch it become a photo; edit a photo by its layout.

One page (``static/``) and a JSON/HTTP API that scripts can call as well:

=====================  =====================================================================================
``GET  /api/models``    the loaded runs: classes (id, name, colour), void, size, method and its options
``POST /api/synthesize`` multipart ``label`` PNG (index, or colour in the run's palette), ``model``, ``seed``, ``k``,
                        method options → ``image/png`` (k > 1 or ``format=json``: JSON of base64 PNGs + extras)
``POST /api/segment``   ``photo`` → the photo's layout, an index PNG (palette mode: values are ids) at model size
``POST /api/edit``      ``photo``, edited ``label``, ``mask`` PNG (non-zero: re-render) → ``image/png`` (SESAME)
``POST /api/label``     ``label`` → the validated layout at model size (``format=json``: ids; ``png``: index PNG)
``GET  /api/layout``    a random layout of the run's dataset (``format`` as above)
=====================  =====================================================================================

Robustness: request bodies and uploaded images are size-limited (bytes, pixels) before any decoding; bad labels
are a 400 with the one-line ``LabelError``; every refusal is ``{"error": "..."}`` with a 4xx — a malformed request
is never a 5xx.  Renders run off the event loop, one at a time per model; at most ``Limits.queue`` requests may
wait per model (more: 503), none waits longer than ``Limits.wait_seconds`` (503), and a request superseded by a
newer one of the same client (``client`` + increasing ``seq`` fields) is dropped before it renders (409).
"""

from __future__ import annotations

import base64
import io
import json
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..labels import LabelError
from ..utils.web import error, json_api

STATIC = Path(__file__).resolve().parent / "static"


@dataclass
class Limits:
    max_bytes: int = 8 * 1024 * 1024   # one request body
    max_pixels: int = 4096 * 4096      # one uploaded image (checked from its header, before decoding)
    max_k: int = 8                     # images per synthesis request
    queue: int = 4                     # renders running or waiting per model; one more is refused (503)
    wait_seconds: float = 60.0         # a render that cannot start within this is refused (503)


class Refused(Exception):
    """A request the studio declines: HTTP status + one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------- one loaded run
@dataclass
class StudioModel:
    """A run the studio serves: its pipeline, an optional segmenter and dataset, and its render queue."""

    name: str
    run: str
    pipe: object
    segmenter_path: str | None = None  # None: the run's evaluator from the cache, when there is one
    lock: threading.Lock = field(default_factory=threading.Lock)        # one render at a time
    lock_state: threading.Lock = field(default_factory=threading.Lock)  # guards pending / latest
    pending: int = 0
    latest: OrderedDict = field(default_factory=OrderedDict)  # client → newest seq seen (bounded)
    _layouts: object = None
    _segmenter: object = None

    @property
    def spec(self):
        return self.pipe.spec

    def options(self, limits: Limits) -> dict:
        """What the page offers for this run: the method's own ``inference_controls()`` (how many different images,
        style photo, clusters, re-sampling, canvas), with k capped by the studio's limit."""
        options = self.pipe.controls.as_dict()
        options["max_k"] = min(options["max_k"] or limits.max_k, limits.max_k)
        options["edits_photos"] = self.pipe.edits_photos
        return options

    def describe(self, limits: Limits) -> dict:
        spec = self.spec
        options = self.options(limits)
        void = None
        if spec.ignore_index is not None:
            void = {"id": spec.ignore_index, "color": list(spec.void_color)}
        return {"name": self.name, "run": self.run, "method": self.pipe.method.name,
                "size": list(self.pipe.image_size), "label_set": spec.name,
                "classes": [{"id": i, "name": n, "color": list(c)}
                            for i, (n, c) in enumerate(zip(spec.class_names, spec.colors))],
                "void": void, "options": options, "segmenter": self.segmenter_available(),
                "random_layouts": self.layouts() is not None}

    def segmenter_available(self) -> bool:
        try:
            self.segmenter()
        except Exception:  # noqa: BLE001 — any unusable segmenter just means "no segmenter"
            return False
        return True

    def segmenter(self):
        if self._segmenter is None:
            self._segmenter = self.pipe.load_segmenter(self.segmenter_path)
        return self._segmenter

    def layouts(self):
        """The run's dataset (validation split when there is one), or None when it is not on this machine."""
        if self._layouts is None:
            from ..data import open_dataset

            data = self.pipe.config.data
            self._layouts = False
            for split in (("test",) if data.dataset == "synthetic" else ("val", None)):
                try:
                    dataset = open_dataset(data, split=split, augment=False)
                except Exception:  # noqa: BLE001 — a dataset that is not here only disables random layouts
                    continue
                if len(dataset):
                    self._layouts = dataset
                    break
        return self._layouts or None

    # ------------------------------------------------------------------ the queue
    def render(self, job, limits: Limits, client: str | None = None, seq: int | None = None):
        """Run ``job()`` under this model's lock; refuse when the queue is full, the wait too long, or a newer
        request of the same client arrived meanwhile."""
        with self.lock_state:
            if client is not None and seq is not None:
                if seq < self.latest.get(client, -1):
                    raise Refused(409, "superseded by a newer request")
                self.latest[client] = seq
                self.latest.move_to_end(client)
                while len(self.latest) > 1000:
                    self.latest.popitem(last=False)
            if self.pending >= limits.queue:
                raise Refused(503, f"model {self.name!r} is busy ({self.pending} renders queued); retry shortly")
            self.pending += 1
        try:
            if not self.lock.acquire(timeout=limits.wait_seconds):
                raise Refused(503, f"model {self.name!r} did not become free within {limits.wait_seconds:g} s")
            try:
                if client is not None and seq is not None and seq < self.latest.get(client, -1):
                    raise Refused(409, "superseded by a newer request")
                with torch.no_grad():
                    return job()
            finally:
                self.lock.release()
        finally:
            with self.lock_state:
                self.pending -= 1


# --------------------------------------------------------------------------------------------- images in and out
def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def index_png(ids: torch.Tensor, spec) -> bytes:
    """(H,W) ids → an 8-bit palette PNG whose values are the ids and whose palette is the run's colours."""
    array = ids.numpy().astype(np.uint8)
    image = Image.fromarray(array, "P")
    table = [0, 0, 0] * 256
    for class_id, colour in enumerate(spec.colors):
        table[3 * class_id:3 * class_id + 3] = list(colour)
    if spec.ignore_index is not None and spec.ignore_index < 256:
        table[3 * spec.ignore_index:3 * spec.ignore_index + 3] = list(spec.void_color)
    image.putpalette(table)
    return png_bytes(image)


def ids_json(ids: torch.Tensor) -> dict:
    height, width = ids.shape
    return {"height": height, "width": width,
            "ids": base64.b64encode(ids.numpy().astype(np.uint8).tobytes()).decode("ascii")}


def as_base64(image: Image.Image) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


# --------------------------------------------------------------------------------------------- the app
def create_app(models: list[StudioModel], limits: Limits | None = None) -> FastAPI:
    if not models:
        raise ValueError("the studio needs at least one run")
    limits = limits or Limits()
    by_name = {model.name: model for model in models}
    if len(by_name) != len(models):
        raise ValueError("two runs share a name")
    app = json_api("inverseg studio")

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        return error(exc.status, str(exc))

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-store"})

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in {p.name for p in STATIC.iterdir()}:  # a fixed set of files, never a path from the client
            return error(404, f"no static file {name!r}")
        return FileResponse(STATIC / name, headers={"Cache-Control": "no-store"})

    @app.get("/api/config")
    def config():
        return {"title": "inverseg studio", "models": len(models)}

    @app.get("/api/models")
    def list_models():
        return {"models": [model.describe(limits) for model in models], "limits": {
            "max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels, "max_k": limits.max_k}}

    # ------------------------------------------------------------------ request parsing
    async def read_form(request: Request):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limits.max_bytes):
            raise Refused(413, f"request body over {limits.max_bytes} bytes")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise Refused(400, "send multipart/form-data (e.g. curl -F label=@layout.png -F model=NAME)")
        received = 0
        receive = request._receive

        async def counting_receive():  # a body without Content-Length is counted as it arrives
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limits.max_bytes:
                raise Refused(413, f"request body over {limits.max_bytes} bytes")
            return message

        request._receive = counting_receive
        try:
            return await request.form(max_files=4, max_fields=32, max_part_size=64 * 1024)
        except Refused:
            raise
        except Exception as problem:  # noqa: BLE001 — any parser complaint is the client's malformed body
            raise Refused(400, f"malformed multipart body ({type(problem).__name__})") from None

    def pick_model(form) -> StudioModel:
        name = form.get("model")
        if name is None:
            if len(models) == 1:
                return models[0]
            raise Refused(400, f"pass model=NAME; loaded: {', '.join(by_name)}")
        if not isinstance(name, str) or name not in by_name:
            raise Refused(404, f"unknown model {str(name)[:80]!r}; loaded: {', '.join(by_name)}")
        return by_name[name]

    async def read_image(form, key: str, required: bool = True) -> Image.Image | None:
        upload = form.get(key)
        if upload is None:
            if required:
                raise Refused(400, f"missing file field {key!r}")
            return None
        if not isinstance(upload, UploadFile):
            raise Refused(400, f"{key!r} must be a file upload (multipart file field), not text")
        data = await upload.read(limits.max_bytes + 1)
        if len(data) > limits.max_bytes:
            raise Refused(413, f"{key}: file over {limits.max_bytes} bytes")
        try:
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise Refused(413, f"{key}: {width}×{height} pixels is over the limit of {limits.max_pixels}")
            image.load()
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError):
            raise Refused(400, f"{key}: not a readable image (send a PNG or JPEG)") from None
        return image

    def integer(form, key: str, default: int | None, low: int, high: int) -> int | None:
        value = form.get(key)
        if value is None or value == "":
            return default
        if not isinstance(value, str) or not value.strip().lstrip("-").isdigit() or len(value) > 20:
            raise Refused(400, f"{key} must be an integer, got {str(value)[:40]!r}")
        number = int(value)
        if not low <= number <= high:
            raise Refused(400, f"{key} must be between {low} and {high}, got {number}")
        return number

    def client_of(form) -> tuple[str | None, int | None]:
        client = form.get("client")
        if client is not None and (not isinstance(client, str) or not 0 < len(client) <= 64):
            raise Refused(400, "client must be an id of 1–64 characters")
        return client, integer(form, "seq", None, 0, 2**53)

    def label_ids(model: StudioModel, image: Image.Image, source: str = "label") -> torch.Tensor:
        try:
            return model.pipe.to_model_size(model.pipe.read_label(image, source=source, void_colour=True))
        except LabelError as problem:
            raise Refused(400, str(problem)) from None

    def layout_response(model: StudioModel, ids: torch.Tensor, form_format: str | None):
        if form_format == "png":
            return Response(index_png(ids, model.spec), media_type="image/png")
        return ids_json(ids)

    async def rendered(model: StudioModel, job, form):
        client, seq = client_of(form)
        try:
            return await run_in_threadpool(model.render, job, limits, client, seq)
        except Refused:
            raise
        except (LabelError, ValueError, TypeError) as problem:  # the method's one-line refusal of an option
            raise Refused(400, str(problem).splitlines()[0]) from None

    # ------------------------------------------------------------------ endpoints
    @app.post("/api/synthesize")
    async def synthesize(request: Request):
        form = await read_form(request)
        model = pick_model(form)
        ids = label_ids(model, await read_image(form, "label"))
        options = model.options(limits)
        k = integer(form, "k", 1, 1, limits.max_k)
        try:
            model.pipe.check_options(k=k)  # a deterministic run is not rendered k times for k equal images
        except ValueError as problem:
            raise Refused(400, str(problem)) from None
        seed = integer(form, "seed", None, 0, 2**63 - 1)
        style: dict = {}
        style_image = await read_image(form, "style_image", required=False)
        if style_image is not None:
            style["style_image"] = style_image.convert("RGB")
        if form.get("styles"):
            try:
                styles = json.loads(form.get("styles"))
            except (TypeError, ValueError):
                raise Refused(400, "styles must be JSON: {\"class id or name\": cluster, …}") from None
            if not isinstance(styles, dict) or len(styles) > 1024:
                raise Refused(400, "styles must be a JSON object {\"class id or name\": cluster, …}")
            style["style"] = styles
        elif form.get("style") not in (None, ""):
            style["style"] = integer(form, "style", None, 0, 10_000)
        resample = await read_image(form, "resample_mask", required=False)
        resample_seed = integer(form, "resample_seed", 0, 0, 2**63 - 1)
        if resample is not None and not options.get("resample"):
            raise Refused(400, f"regional re-sampling needs an OASIS run with 3D noise; {model.name!r} is "
                               f"{model.pipe.method.name}")

        def job():
            pipe, kwargs, use_seed = model.pipe, dict(style), seed
            if resample is not None:  # same base noise as seed=SEED, fresh noise inside the mask
                method = pipe.method
                base_generator = torch.Generator().manual_seed(seed or 0)
                model_ids = ids[None].to(method.device)
                kwargs["noise"] = torch.stack([method.noise(model_ids, None, base_generator) for _ in range(k)], 1)
                kwargs["resample_mask"] = pipe.read_mask(resample).numpy()
                use_seed = resample_seed
            images = pipe(ids, k=k, seed=use_seed, **kwargs)
            return images, dict(pipe.last_extras)

        images, extras = await rendered(model, job, form)
        if k == 1 and form.get("format") != "json":
            return Response(png_bytes(images[0]), media_type="image/png")
        return {"images": [as_base64(image) for image in images],
                "extras": {name: as_base64(image) for name, image in extras.items()}}

    @app.post("/api/segment")
    async def segment(request: Request):
        form = await read_form(request)
        model = pick_model(form)
        photo = await read_image(form, "photo")
        try:
            segmenter = model.segmenter()
        except Exception as problem:  # noqa: BLE001 — no segmenter for this label set is the client's to fix
            raise Refused(404, f"{str(problem).splitlines()[0]}; or upload the photo's label map") from None
        ids = await rendered(model, lambda: model.pipe.segment(photo, segmenter), form)
        return layout_response(model, ids, form.get("format") or "png")

    @app.post("/api/edit")
    async def edit(request: Request):
        form = await read_form(request)
        model = pick_model(form)
        if not model.pipe.edits_photos:
            raise Refused(400, f"model {model.name!r} ({model.pipe.method.name}) synthesizes from layouts only; "
                               f"editing a photo needs a sesame run")
        photo = await read_image(form, "photo")
        ids = label_ids(model, await read_image(form, "label"))
        mask = await read_image(form, "mask", required=False)
        original = await read_image(form, "original", required=False)
        if mask is None and original is None:
            raise Refused(400, "pass mask (PNG, non-zero = re-render) or original (the photo's own layout)")
        original_ids = None if original is None else label_ids(model, original, "original")
        grow = integer(form, "grow", 0, 0, 64)

        def job():
            return model.pipe.edit(photo, ids, mask=None if mask is None else model.pipe.read_mask(mask),
                                   original_layout=original_ids, grow=grow, size="model")

        return Response(png_bytes(await rendered(model, job, form)), media_type="image/png")

    @app.post("/api/label")
    async def label(request: Request):
        form = await read_form(request)
        model = pick_model(form)
        return layout_response(model, label_ids(model, await read_image(form, "label")), form.get("format"))

    @app.get("/api/layout")
    def layout(model: str | None = None, index: int | None = None, format: str | None = None):
        chosen = pick_model({} if model is None else {"model": model})
        dataset = chosen.layouts()
        if dataset is None:
            raise Refused(404, f"the dataset of {chosen.name!r} ({chosen.pipe.config.data.dataset}, "
                               f"{chosen.pipe.config.data.path}) is not on this machine; upload a label map instead")
        if index is None:
            index = random.Random(time.monotonic_ns()).randrange(len(dataset))
        if not 0 <= index < len(dataset):
            raise Refused(400, f"index must be between 0 and {len(dataset) - 1}, got {index}")
        ids = chosen.pipe.to_model_size(dataset[index]["label"])
        return layout_response(chosen, ids, format)

    return app
