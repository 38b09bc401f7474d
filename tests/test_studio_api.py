"""The studio's HTTP API (FastAPI TestClient) on tiny trained runs: good requests of every endpoint, and malformed,
oversized, wrong-palette and unknown-model requests (always a 4xx with a one-line message); the render queue; the
``inverseg serve`` command's host warning."""

from __future__ import annotations

import base64
import io
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from _gan_scenes import CAR, SPEC, H, W, toy_label
from _studio_runs import colour_png, decode, index_png, png
from inverseg.app.server import Limits, Refused, StudioModel, create_app
from inverseg.cli.main import main

with warnings.catch_warnings():  # starlette ≥ 1.x asks for httpx2 at import; httpx works the same here
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

LABEL = toy_label()[0].numpy()
# what /api/models reports for a run without any control of its own
NO_CONTROLS = {"max_k": 1, "style_image": False, "clusters": 0, "resample": False, "canvas": False,
               "edits_photos": False}


@pytest.fixture(scope="module")
def client(studio_runs):
    from inverseg.cli.serve import load_models

    models = load_models([str(studio_runs["sesame"]), str(studio_runs["spade"]), str(studio_runs["oasis"])], None,
                         str(studio_runs["segmenter"]), "cpu")
    return TestClient(create_app(models, Limits(max_bytes=300_000, max_pixels=200_000, max_k=4)))


def post(client, path, files, **data):
    return client.post(path, data=data, files={k: (f"{k}.png", v) for k, v in files.items()})


def test_models_describe_classes_palette_size_and_options(client):
    data = client.get("/api/models").json()
    models = {model["name"]: model for model in data["models"]}
    assert list(models) == ["sesame", "spade", "oasis"] and data["limits"]["max_k"] == 4
    sesame = models["sesame"]
    assert sesame["size"] == [H, W] and sesame["label_set"] == "camvid" and sesame["segmenter"] is True
    assert sesame["classes"][CAR] == {"id": CAR, "name": "car", "color": list(SPEC.colors[CAR])}
    assert sesame["void"] == {"id": 11, "color": list(SPEC.void_color)}
    assert sesame["options"] == {**NO_CONTROLS, "edits_photos": True} and sesame["random_layouts"] is True
    assert models["spade"]["options"] == {**NO_CONTROLS, "max_k": 4, "style_image": True}
    assert models["oasis"]["options"] == {**NO_CONTROLS, "max_k": 4, "resample": True}
    page = client.get("/")
    assert page.status_code == 200 and 'src="/static/studio.js"' in page.text
    assert "api/synthesize" in client.get("/static/studio.js").text
    assert client.get("/static/..%2Fserver.py").status_code == 404


def test_synthesize_png_json_seed_and_style(client):
    one = post(client, "/api/synthesize", {"label": index_png(LABEL)}, model="spade", seed="3")
    assert one.status_code == 200 and one.headers["content-type"] == "image/png"
    assert decode(one.content).shape == (H, W, 3)
    again = post(client, "/api/synthesize", {"label": colour_png(LABEL)}, model="spade", seed="3")
    assert again.content == one.content  # a colour PNG in the run's palette (void colour too) is the same layout
    other = post(client, "/api/synthesize", {"label": index_png(LABEL)}, model="spade", seed="4")
    assert other.content != one.content
    many = post(client, "/api/synthesize", {"label": index_png(LABEL)}, model="spade", seed="3", k="3").json()
    images = [base64.b64decode(b) for b in many["images"]]
    assert len(images) == 3 and len(set(images)) == 3 and many["extras"] == {}
    photo = png(np.full((H, W, 3), 200, np.uint8))
    styled = post(client, "/api/synthesize", {"label": index_png(LABEL), "style_image": photo}, model="spade",
                  seed="3")
    assert styled.status_code == 200 and styled.content != one.content


def test_oasis_regional_resampling_changes_only_the_masked_region(client):
    base = decode(post(client, "/api/synthesize", {"label": index_png(LABEL)}, model="oasis", seed="7").content)
    mask = np.zeros((H, W), np.uint8)
    mask[:, W // 2:] = 255
    rolled = decode(post(client, "/api/synthesize", {"label": index_png(LABEL), "resample_mask": png(mask)},
                         model="oasis", seed="7", resample_seed="99").content)
    difference = np.abs(rolled - base).sum(-1)
    # new noise on the right half: the right half changes most (a tiny net's receptive field spans the frame)
    assert difference[:, W // 2:].mean() > 1.5 * difference[:, :W // 2].mean()
    empty = decode(post(client, "/api/synthesize", {"label": index_png(LABEL), "resample_mask": png(0 * mask)},
                        model="oasis", seed="7", resample_seed="99").content)
    assert np.array_equal(empty, base)  # an empty mask: exactly the base noise of seed 7
    refused = post(client, "/api/synthesize", {"label": index_png(LABEL), "resample_mask": png(mask)}, model="spade")
    assert refused.status_code == 400 and "OASIS" in refused.json()["error"]


def test_segment_edit_label_and_layout(client):
    plain = np.where(LABEL == SPEC.ignore_index, 3, LABEL)
    photo = SPEC.colorize(plain)
    reading = post(client, "/api/segment", {"photo": png(photo)}, model="sesame")
    assert reading.status_code == 200 and reading.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(reading.content)) as image:  # a palette PNG: values are ids, colours the run's
        assert image.mode == "P" and np.array_equal(np.asarray(image), plain)
        assert np.array_equal(np.asarray(image.convert("RGB")), photo)
    as_json = post(client, "/api/segment", {"photo": png(photo)}, model="sesame", format="json").json()
    assert np.array_equal(np.frombuffer(base64.b64decode(as_json["ids"]), np.uint8).reshape(H, W), plain)

    edited = plain.copy()
    edited[14:22, 40:60] = CAR  # on the road
    mask = np.zeros((H, W), np.uint8)
    mask[14:22, 40:60] = 255
    out = post(client, "/api/edit", {"photo": png(photo), "label": index_png(edited), "mask": png(mask)},
               model="sesame")
    assert out.status_code == 200
    result = decode(out.content)
    assert np.array_equal(result[mask == 0], photo[mask == 0])  # outside the mask: the photo
    assert np.abs(result[mask > 0] - photo[mask > 0]).mean() > 5
    by_layout = post(client, "/api/edit", {"photo": png(photo), "label": index_png(edited),
                                           "original": index_png(plain)}, model="sesame", grow="0")
    assert by_layout.content == out.content  # the region: where the layout changed
    refused = post(client, "/api/edit", {"photo": png(photo), "label": index_png(edited), "mask": png(mask)},
                   model="spade")
    assert refused.status_code == 400 and "synthesizes from layouts only" in refused.json()["error"]

    layout = post(client, "/api/label", {"label": colour_png(LABEL)}, model="sesame", format="png")
    with Image.open(io.BytesIO(layout.content)) as image:
        assert np.array_equal(np.asarray(image), LABEL)
    small = np.kron(LABEL, np.ones((1, 1), np.int64))[::2, ::2]
    resized = post(client, "/api/label", {"label": index_png(small)}, model="sesame", format="json").json()
    assert (resized["height"], resized["width"]) == (H, W)  # any size: resized (nearest) to the model's
    random_layout = client.get("/api/layout", params={"model": "sesame", "index": 2, "format": "json"}).json()
    ids = np.frombuffer(base64.b64decode(random_layout["ids"]), np.uint8)
    assert ids.size == H * W and set(np.unique(ids)) <= set(range(12))
    assert client.get("/api/layout", params={"model": "sesame", "index": 10**6}).status_code == 400


@pytest.mark.parametrize("files, data, status, message", [
    ({"label": index_png(np.where(LABEL == CAR, 40, LABEL))}, {"model": "spade"}, 400,
     "label values 40 (128 px) are not in the 'camvid' label set"),
    ({"label": png(np.full((H, W, 3), (1, 2, 3), np.uint8))}, {"model": "spade"}, 400,
     "colours (1,2,3) (2048 px) are not in palette the 'camvid' palette"),
    ({"label": b"not a png"}, {"model": "spade"}, 400, "label: not a readable image"),
    ({"label": index_png(LABEL)}, {"model": "nope"}, 404, "unknown model 'nope'; loaded: sesame, spade, oasis"),
    ({"label": index_png(LABEL)}, {}, 400, "pass model=NAME"),
    ({"photo": index_png(LABEL)}, {"model": "spade"}, 400, "missing file field 'label'"),
    ({}, {"model": "spade"}, 400, "send multipart/form-data"),
    ({"label": index_png(LABEL)}, {"model": "spade", "k": "lots"}, 400, "k must be an integer"),
    ({"label": index_png(LABEL)}, {"model": "spade", "k": "9"}, 400, "k must be between 1 and 4"),
    ({"label": index_png(LABEL)}, {"model": "sesame", "k": "2"}, 400,
     "this sesame run is deterministic: it gives one image per layout; ask for k=1"),
    ({"label": index_png(LABEL)}, {"model": "spade", "styles": "{"}, 400, "styles must be JSON"),
    ({"label": index_png(np.zeros((500, 500)))}, {"model": "spade"}, 413, "500×500 pixels is over the limit"),
    ({"label": b"\x89PNG" + b"0" * 400_000}, {"model": "spade"}, 413, "request body over 300000 bytes"),
])
def test_bad_requests_are_4xx_with_one_line(client, files, data, status, message):
    response = post(client, "/api/synthesize", files, **data)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error


def test_malformed_bodies_are_never_5xx(client):
    cases = [
        client.post("/api/synthesize", content=b"{}", headers={"content-type": "application/json"}),
        client.post("/api/synthesize", content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=x"}),
        client.post("/api/edit", data={"model": "sesame", "label": "text, not a file"}),
        client.post("/api/segment", files={"photo": ("p.png", b"")}, data={"model": "sesame"}),
        client.post("/api/synthesize", content=b"x" * 10, headers={"content-type": "multipart/form-data",
                                                                   "content-length": "nope"}),
        client.get("/api/layout", params={"index": "x"}),
        client.post("/api/synthesize", files={"label": ("l.png", index_png(LABEL))},
                    data={"model": "sesame", "seq": "-1", "client": "c"}),
    ]
    assert [response.status_code for response in cases] == [400, 400, 400, 400, 413, 400, 400]
    assert all("error" in response.json() for response in cases)


PATIENCE = 60.0  # seconds a thread may take to get going on a loaded machine; a passing run waits milliseconds


def wait_until(condition, what: str) -> None:
    """Poll ``condition`` until it holds.  A started thread may not run for a while when the machine is busy, so
    no fixed sleep is long enough to know it has queued."""
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {PATIENCE:g} s"
        time.sleep(0.01)


def test_render_queue_refuses_when_full_and_drops_superseded_requests():
    model = StudioModel("m", "run", pipe=None)
    limits = Limits(queue=2, wait_seconds=PATIENCE)
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(PATIENCE)
        return "slow"

    results: dict = {}

    def run(name, job, client=None, seq=None):
        try:
            results[name] = model.render(job, limits, client, seq)
        except Refused as refused:
            results[name] = (refused.status, str(refused))

    first = threading.Thread(target=run, args=("first", slow, "c", 1))
    first.start()
    assert started.wait(PATIENCE)
    second = threading.Thread(target=run, args=("second", lambda: "second", "c", 2))
    second.start()
    wait_until(lambda: model.pending == 2, "the second request queueing")
    run("third", lambda: "third", "d", 1)  # queue full: one running, one waiting
    run("old", lambda: "old", "c", 0)      # older than a request this client already sent
    newest = threading.Thread(target=run, args=("newest", lambda: "newest", "e", 1))
    release.set()
    first.join(PATIENCE)
    second.join(PATIENCE)
    newest.start()
    newest.join(PATIENCE)
    assert results["first"] == "slow" and results["second"] == "second" and results["newest"] == "newest"
    assert results["third"][0] == 503 and "busy" in results["third"][1]
    assert results["old"] == (409, "superseded by a newer request")
    assert model.pending == 0


def test_a_queued_request_is_dropped_when_a_newer_one_arrives():
    model = StudioModel("m", "run", pipe=None)
    limits = Limits(queue=4, wait_seconds=PATIENCE)
    model.lock.acquire()  # a render is running
    results = {}

    def run(seq):
        try:
            results[seq] = model.render(lambda: seq, limits, "c", seq)
        except Refused as refused:
            results[seq] = refused.status

    waiting = [threading.Thread(target=run, args=(seq,)) for seq in (1, 2)]
    for queued, thread in enumerate(waiting, start=1):  # request 1 queues before request 2 is sent
        thread.start()
        wait_until(lambda: model.pending == queued, f"request {queued} queueing")
    model.lock.release()
    for thread in waiting:
        thread.join(PATIENCE)
    assert results == {1: 409, 2: 2}


def test_serve_command_binds_loopback_and_warns_for_other_hosts(studio_runs, monkeypatch, capsys):
    served = []
    monkeypatch.setattr("inverseg.utils.web.serve", lambda app, host, port: served.append((host, port)))
    monkeypatch.setattr("inverseg.cli.study._check_port", lambda host, port: None)
    run = str(studio_runs["sesame"])
    assert main(["serve", "--checkpoint", run, "--port", "8123"]) == 0
    captured = capsys.readouterr()
    assert served == [("127.0.0.1", 8123)] and "studio: http://127.0.0.1:8123/" in captured.out
    assert "warning" not in captured.err
    assert main(["serve", "--checkpoint", run, "--host", "0.0.0.0", "--port", "8124"]) == 0
    captured = capsys.readouterr()
    assert served[-1] == ("0.0.0.0", 8124) and "warning: listening on 0.0.0.0" in captured.err
    assert main(["serve", "--checkpoint", run, "--checkpoint", run]) == 2
    assert "two runs are named 'sesame'" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(studio_runs["segmenter"].parent)]) == 2
    assert "not a run or checkpoint directory" in capsys.readouterr().err


def test_pix2pixhd_cluster_per_class():
    from _gan_scenes import build

    torch.manual_seed(0)
    method, _ = build("pix2pixhd-cpu", (H, W), "model.ngf=4", "features.nef=4", "features.n_clusters=3",
                      "model.n_local_enhancers=0")
    method.eval()
    method.clusters.counts.fill_(3)
    method.clusters.centers.normal_()
    label = toy_label()
    _, keys = method.segments(label, None)
    rows = method.cluster_row(keys[:, 2])
    styles = method._segment_styles({"car": 1, 0: 2}, rows)
    classes = keys[:, 2]
    assert styles[classes == CAR].tolist() == [1] and styles[classes == 0].tolist() == [2]
    assert set(styles[(classes != CAR) & (classes != 0)].tolist()) == {-1}  # the rest: random
    chosen = [method.clusters.choose(rows, styles, torch.Generator().manual_seed(seed)) for seed in range(8)]
    centres = method.clusters.centers
    assert all(torch.equal(c[classes == CAR][0], centres[CAR, 1]) for c in chosen)
    assert len({tuple(c[classes == 3][0].tolist()) for c in chosen}) > 1  # road draws a cluster at random
    one, two = (method.sample(label, style={"car": 1}, generator=torch.Generator().manual_seed(s)) for s in (0, 1))
    assert not torch.equal(one, two)
    with pytest.raises(ValueError, match="no class named 'unicorn'"):
        method.sample(label, style={"unicorn": 1})
    with pytest.raises(ValueError, match="cluster index 0–2"):
        method.sample(label, style={"car": 7})


def test_a_spade_run_without_vae_offers_one_image_and_no_style_photo(tmp_path):
    """The CamVid preset's default (no VAE, issue 11 §3): k stays 1, the style photo is not offered, and a request
    that sends one anyway is a 400 naming the fix; the seed does not matter (deterministic generator)."""
    from _studio_runs import SPADE_TINY, train_tiny
    from inverseg.cli.serve import load_models

    run = train_tiny(tmp_path / "spade", "spade-cpu", *SPADE_TINY, "vae.enabled=false", "train.sample_k=1", steps=1)
    client = TestClient(create_app(load_models([str(run)], None, None, "cpu"), Limits(max_k=4)))
    (model,) = client.get("/api/models").json()["models"]
    assert model["options"] == NO_CONTROLS
    one = post(client, "/api/synthesize", {"label": index_png(LABEL)}, seed="3")
    assert one.status_code == 200
    assert one.content == post(client, "/api/synthesize", {"label": index_png(LABEL)}, seed="4").content
    photo = png(np.full((H, W, 3), 90, np.uint8))
    styled = post(client, "/api/synthesize", {"label": index_png(LABEL), "style_image": photo})
    assert styled.status_code == 400 and "vae.enabled=true" in styled.json()["error"]
    refused = post(client, "/api/synthesize", {"label": index_png(LABEL)}, k="2")
    assert refused.status_code == 400 and refused.json()["error"] == ("this spade run is deterministic: it gives one "
                                                                      "image per layout; ask for k=1")


def test_synthesize_command_refuses_k_and_style_the_run_cannot_honour(tmp_path, capsys):
    """Before any file is read, one ``error:`` line (exit 2) instead of a traceback from the first render."""
    from _studio_runs import SPADE_TINY, train_tiny

    run = train_tiny(tmp_path / "spade", "spade-cpu", *SPADE_TINY, "vae.enabled=false", "train.sample_k=1", steps=1)
    (tmp_path / "layout.png").write_bytes(index_png(LABEL))
    (tmp_path / "photo.png").write_bytes(png(np.full((H, W, 3), 90, np.uint8)))
    common = ["synthesize", "--checkpoint", str(run), "--labels", str(tmp_path / "layout.png"), "--out",
              str(tmp_path / "out")]
    assert main([*common, "--k", "3"]) == 2
    assert capsys.readouterr().err == ("error: this spade run is deterministic: it gives one image per layout; "
                                       "ask for k=1\n")
    assert main([*common, "--style-image", str(tmp_path / "photo.png")]) == 2
    assert "takes no style image" in capsys.readouterr().err
    assert main([*common, "--style", "1"]) == 2
    assert "has no appearance clusters" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert main(common) == 0 and (tmp_path / "out" / "layout.png").is_file()


# --------------------------------------------------------------------------------------------- inference controls
SAFM_TINY = ("model.ngf=4", "model.spade_hidden=8", "model.shape_hidden=4", "vae.nf=4", f"vae.input_size=[{H},{W}]",
             "vae.num_layers=5", "vae.z_dim=8", "segmenter.channels=[8,8,8]", "segmenter.last_channels=4")
CCFPSE_TINY = ("model.ngf=4", "model.hidden=8", "model.pyramid_channels=4", "vae.nf=4", f"vae.input_size=[{H},{W}]",
               "vae.num_layers=5", "vae.z_dim=8")
LGGAN_TINY = ("model.ngf=4", "model.spade_hidden=8", "model.local_blocks=2")
SPADE_BUILD = ("model.ngf=4", "model.spade_hidden=8", "vae.nf=4", f"vae.input_size=[{H},{W}]", "vae.num_layers=5",
               "vae.z_dim=8")
OASIS_BUILD = ("model.ngf=4", "model.spade_hidden=8")
# name → (preset, overrides, the controls the run must declare); untrained, init gain 1 (0.02 paints flat grey)
BUILT = {
    "safm-vae": ("safm-cpu", SAFM_TINY, {"max_k": None, "style_image": True}),
    "safm": ("safm-cpu", (*SAFM_TINY, "vae.enabled=false"), {}),
    "ccfpse-vae": ("ccfpse-cpu", CCFPSE_TINY, {"max_k": None, "style_image": True}),
    "ccfpse": ("ccfpse-cpu", (*CCFPSE_TINY, "vae.enabled=false"), {}),
    "lggan": ("lggan-cpu", LGGAN_TINY, {}),
    "spade-vae": ("spade-cpu", SPADE_BUILD, {"max_k": None, "style_image": True}),
    "spade": ("spade-cpu", (*SPADE_BUILD, "vae.enabled=false"), {}),
    "oasis-noise": ("oasis-cpu", (*OASIS_BUILD, "model.z_dim=8"), {"max_k": None, "resample": True}),
    "oasis": ("oasis-cpu", (*OASIS_BUILD, "model.z_dim=0"), {}),
    "sesame": ("sesame-cpu", OASIS_BUILD, {}),
    "pix2pixhd": ("pix2pixhd-cpu", ("model.ngf=4", "features.enabled=false", "model.n_local_enhancers=0"), {}),
}


def built_method(name: str):
    from _gan_scenes import build

    preset, overrides, _ = BUILT[name]
    torch.manual_seed(0)
    method, config = build(preset, (H, W), *overrides, "model.init_gain=1.0")
    return method.eval(), config


@pytest.mark.parametrize("name", list(BUILT))
def test_every_method_declares_the_controls_its_sample_honours(name):
    """The declaration is checked against the real ``sample``: a style photo is taken exactly when declared, and
    two seeds give different images exactly when k is unbounded; a deterministic one refuses k=2."""
    from inverseg.methods import InferenceControls

    method, _ = built_method(name)
    controls = method.inference_controls()
    assert controls == InferenceControls(**BUILT[name][2])
    label = toy_label()
    photo = torch.rand(1, 3, H, W) * 2 - 1
    if controls.style_image:
        one, two = (method.sample(label, style_image=image, generator=torch.Generator().manual_seed(3))
                    for image in (photo, -photo))
        assert not torch.equal(one, two)  # the photo is used
    else:
        with pytest.raises(TypeError):
            method.sample(label, style_image=photo)
    one, two = (method.sample(label, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1))
    assert torch.equal(one, two) is (controls.max_k == 1)
    if controls.max_k == 1:
        with pytest.raises(ValueError, match="deterministic"):
            method.sample(label, k=2)


def test_crn_sims_and_pix2pixhd_declare_outputs_candidates_and_fitted_clusters():
    from _gan_scenes import build

    small = ("model.widths=[4,4,4,4,4,4]",)  # the CRN presets' 96×128 (six modules on a 3×4 grid)
    assert build("crn-cpu", (96, 128), *small)[0].inference_controls().max_k == 1
    assert build("crn-cpu-diversity", (96, 128), *small)[0].inference_controls().max_k == 9
    sims = build("sims-cpu", (H, W), "retrieval.top_k=3")[0].inference_controls()
    assert (sims.max_k, sims.canvas, sims.style_image) == (3, True, False)
    method, _ = build("pix2pixhd-cpu", (H, W), "model.ngf=4", "features.nef=4", "features.n_clusters=3",
                      "model.n_local_enhancers=0")
    assert method.inference_controls().as_dict() == {"max_k": 1, "style_image": True, "clusters": 3,
                                                     "resample": False, "canvas": False}  # no clusters fitted yet
    method.clusters.counts.fill_(3)
    assert method.inference_controls().max_k is None  # random clusters per seed


@pytest.fixture(scope="module")
def built_client():
    """The studio on SAFM / CC-FPSE runs with and without the VAE, and an LGGAN run, built without training."""
    from inverseg.pipeline import Pipeline

    models = []
    for name in ("safm-vae", "safm", "ccfpse-vae", "ccfpse", "lggan"):
        method, config = built_method(name)
        models.append(StudioModel(name, f"(built {name})", Pipeline(method, SPEC, (H, W), config)))
    return TestClient(create_app(models, Limits(max_k=4)))


def test_models_report_each_methods_own_controls(built_client):
    models = {m["name"]: m for m in built_client.get("/api/models").json()["models"]}
    with_vae = {**NO_CONTROLS, "max_k": 4, "style_image": True}
    assert models["safm-vae"]["options"] == with_vae and models["ccfpse-vae"]["options"] == with_vae
    for name in ("safm", "ccfpse", "lggan"):
        assert models[name]["options"] == NO_CONTROLS, name
    assert models["lggan"]["method"] == "lggan" and models["ccfpse-vae"]["method"] == "ccfpse"


@pytest.mark.parametrize("name", ["safm-vae", "ccfpse-vae"])
def test_a_vae_fork_takes_a_style_photo_and_gives_k_different_images(built_client, name):
    layout = index_png(LABEL)
    bright, dark = (png(np.full((H, W, 3), value, np.uint8)) for value in (220, 30))
    styled = [post(built_client, "/api/synthesize", {"label": layout, "style_image": photo}, model=name, seed="3")
              for photo in (bright, dark)]
    assert [r.status_code for r in styled] == [200, 200]
    assert decode(styled[0].content).shape == (H, W, 3) and styled[0].content != styled[1].content
    again = post(built_client, "/api/synthesize", {"label": layout, "style_image": bright}, model=name, seed="3")
    assert again.content == styled[0].content
    many = post(built_client, "/api/synthesize", {"label": layout}, model=name, seed="3", k="3").json()
    assert len(set(many["images"])) == 3


@pytest.mark.parametrize("name", ["safm", "ccfpse", "lggan"])
def test_a_deterministic_run_refuses_k_and_style_photo(built_client, name):
    layout = index_png(LABEL)
    refused = post(built_client, "/api/synthesize", {"label": layout}, model=name, k="2")
    assert refused.status_code == 400
    assert refused.json()["error"] == f"this {name} run is deterministic: it gives one image per layout; ask for k=1"
    styled = post(built_client, "/api/synthesize", {"label": layout, "style_image": png(np.zeros((H, W, 3), np.uint8))},
                  model=name)
    assert styled.status_code == 400 and "cannot take a style image" in styled.json()["error"]
    fix = "LGGAN has no VAE mode" if name == "lggan" else "fix: train with vae.enabled=true"
    assert fix in styled.json()["error"]
    one = post(built_client, "/api/synthesize", {"label": layout}, model=name, seed="1")
    assert one.status_code == 200 and one.content == post(built_client, "/api/synthesize", {"label": layout},
                                                          model=name, seed="2").content
