"""The preference study's HTTP API (FastAPI TestClient), its SQLite contents and the ``inverseg study`` CLI."""

from __future__ import annotations

import json
import random
import socket
import sqlite3
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inverseg.cli.main import main
from inverseg.eval.study import StudyStore
from inverseg.eval.study.server import create_app
from inverseg.eval.study.sources import match, open_source

with warnings.catch_warnings():  # starlette ≥ 1.x asks for httpx2 at import; httpx works the same here
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

NAMES = ("berlin_01", "bonn_02", "koeln_03")


def write_method(folder: Path, colour: tuple[int, int, int], names=NAMES, suffix=".png") -> Path:
    """Small images of one flat colour per method, a slightly different shade per layout."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        pixel = np.array(colour, dtype=np.int64) + 10 * index
        Image.fromarray(np.full((24, 32, 3), np.clip(pixel, 0, 255), np.uint8)).save(folder / f"{name}{suffix}")
    return folder


@pytest.fixture()
def study(tmp_path):
    """Two method folders registered in a fresh database, and a client of the app serving them."""
    a = write_method(tmp_path / "crn", (200, 30, 30))
    b = write_method(tmp_path / "sims", (30, 30, 200))
    store = StudyStore(tmp_path / "study.sqlite")
    source_a, source_b = open_source(a), open_source(b)
    pair_ids = store.add_pairs(store.ensure_study(source_a.name, source_b.name), match(source_a, source_b))
    client = TestClient(create_app(store, pair_ids, rng=random.Random(0)))
    return {"client": client, "store": store, "pair_ids": pair_ids, "a": a, "b": b, "db": tmp_path / "study.sqlite"}


def vote(client, trial: str, choice: str = "left", ms=1234):
    return client.post("/api/vote", json={"trial": trial, "choice": choice, "ms": ms})


def test_page_and_static_files(study):
    client = study["client"]
    page = client.get("/")
    assert page.status_code == 200 and 'src="/static/study.js"' in page.text
    assert "ArrowLeft" in client.get("/static/study.js").text
    assert client.get("/api/config").json() == {"title": "Which image is more realistic?", "time_limit_ms": None,
                                                "total": 3}


def test_trial_is_remembered_and_blind(study):
    client, store = study["client"], study["store"]
    first = client.get("/api/next", params={"rater": "alice"}).json()
    assert first["done"] is False and (first["completed"], first["total"]) == (0, 3)
    assert "crn" not in json.dumps(first) and "sims" not in json.dumps(first)  # the page cannot tell the methods
    again = client.get("/api/next", params={"rater": "alice"}).json()
    assert again["trial"] == first["trial"]  # a reload shows the same trial, same sides
    trial = store.trial(first["trial"])
    for side in ("left", "right"):
        response = client.get(first[side])
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        method = trial[f"{side}_method"]
        expected = (study["a"] if method == "crn" else study["b"]) / f"{trial['name']}.png"
        assert response.content == expected.read_bytes()
    other = client.get("/api/next", params={"rater": "bob"}).json()
    assert other["trial"] != first["trial"]


def test_votes_are_stored_in_sqlite(study):
    client, db = study["client"], study["db"]
    choices = ["left", "right", "left"]
    trials = []
    for number, choice in enumerate(choices):
        data = client.get("/api/next", params={"rater": "alice"}).json()
        assert data["completed"] == number
        response = vote(client, data["trial"], choice, ms=1000.4 + number)
        assert response.status_code == 200 and response.json() == {"ok": True, "completed": number + 1, "total": 3}
        trials.append(data["trial"])
    finished = client.get("/api/next", params={"rater": "alice"}).json()
    assert finished == {"rater": "alice", "completed": 3, "total": 3, "time_limit_ms": None, "done": True}

    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        rows = [dict(r) for r in connection.execute(
            "SELECT v.*, t.left_method AS assigned_left, p.name FROM votes v JOIN trials t ON t.id = v.trial_id "
            "JOIN pairs p ON p.id = v.pair_id ORDER BY v.id")]
    assert [r["trial_id"] for r in rows] == trials
    assert sorted(r["name"] for r in rows) == sorted(NAMES)  # every pair once
    for row, choice, number in zip(rows, choices, range(3)):
        assert row["rater"] == "alice" and row["choice"] == choice and row["ms"] == 1000 + number
        assert row["left_method"] == row["assigned_left"] and {row["left_method"], row["right_method"]} == {
            "crn", "sims"}
        assert row["chosen"] == (row["left_method"] if choice == "left" else row["right_method"])
        assert datetime.fromisoformat(row["created"]).tzinfo is not None

    refused = client.get("/api/results")  # raters must not see the running tally
    assert refused.status_code == 401 and "admin token" in refused.json()["error"]
    assert client.get("/api/results?token=wrong").status_code == 401
    token = client.app.state.admin_token
    assert len(token) >= 16
    results = client.get("/api/results", headers={"Authorization": f"Bearer {token}"}).json()
    assert client.get(f"/api/results?token={token}").json() == results
    (comparison,) = results["comparisons"]
    wins_crn = sum(r["chosen"] == "crn" for r in rows)
    assert (comparison["method_a"], comparison["method_b"]) == ("crn", "sims")
    assert (comparison["votes"], comparison["wins_a"], comparison["raters"]) == (3, wins_crn, 1)


def test_bad_requests_are_4xx_json(study):
    client = study["client"]
    trial = client.get("/api/next", params={"rater": "alice"}).json()["trial"]
    bad = [
        (client.get("/api/next"), 400),
        (client.get("/api/next", params={"rater": ""}), 400),
        (client.get("/api/next", params={"rater": "a b/c"}), 400),
        (client.get("/api/next", params={"rater": "x" * 65}), 400),
        (client.get("/api/next", params={"rater": "alice\n"}), 400),
        (client.post("/api/vote", content=b"{not json", headers={"content-type": "application/json"}), 400),
        (client.post("/api/vote", content=b"\xff\xfe", headers={"content-type": "application/json"}), 400),
        (client.post("/api/vote", json=["left"]), 400),
        (client.post("/api/vote", json={"choice": "left", "ms": 5}), 400),
        (client.post("/api/vote", json={"trial": 17, "choice": "left", "ms": 5}), 400),
        (vote(client, trial, "up"), 400),
        (vote(client, trial, None), 400),
        (vote(client, trial, "left", ms=-1), 400),
        (vote(client, trial, "left", ms="fast"), 400),
        (vote(client, trial, "left", ms=True), 400),
        (vote(client, trial, "left", ms=None), 400),
        (client.post("/api/vote", content=b'{"trial": "%s", "choice": "left", "ms": NaN}' % trial.encode()), 400),
        (client.post("/api/vote", content=b'{"trial": "%s", "choice": "left", "ms": 1%s}' % (
            trial.encode(), b"0" * 400)), 400),
        (client.post("/api/vote", content=b"x" * 5000), 413),
        (vote(client, "no-such-trial"), 404),
        (client.post("/api/vote", json={"trial": trial, "choice": "left", "ms": 5, "rater": "mallory"}), 403),
        (client.get("/api/vote"), 405),
        (client.get("/image/no-such-trial/left"), 404),
        (client.get(f"/image/{trial}/middle"), 404),
        (client.get("/static/..%2Fserver.py"), 404),
        (client.get("/static/server.py"), 404),
        (client.get("/nowhere"), 404),
    ]
    for response, status in bad:
        assert response.status_code == status, (response.request.url, response.text)
        assert isinstance(response.json()["error"], str)
    assert vote(client, trial, "right").status_code == 200  # none of the above consumed the trial
    repeated = vote(client, trial, "left")
    assert repeated.status_code == 409 and "already been answered" in repeated.json()["error"]
    with sqlite3.connect(study["db"]) as connection:
        assert connection.execute("SELECT choice FROM votes").fetchall() == [("right",)]


def test_sides_are_randomized_and_state_survives_a_restart(study):
    client, store, pair_ids = study["client"], study["store"], study["pair_ids"]
    lefts = [store.trial(client.get("/api/next", params={"rater": f"r{i}"}).json()["trial"])["left_method"]
             for i in range(40)]
    assert 8 < lefts.count("crn") < 32  # Random(0): both sides occur, roughly balanced
    data = client.get("/api/next", params={"rater": "r0"}).json()
    assert vote(client, data["trial"]).status_code == 200
    restarted = TestClient(create_app(StudyStore(study["db"]), pair_ids))
    again = restarted.get("/api/next", params={"rater": "r0"}).json()
    assert again["completed"] == 1 and again["trial"] != data["trial"]
    assert vote(restarted, data["trial"]).status_code == 409


def test_concurrent_requests_keep_the_protocol(study):
    """Two tabs of one rater get one trial; simultaneous votes on it store exactly one."""
    from concurrent.futures import ThreadPoolExecutor

    store, pair_ids = study["store"], study["pair_ids"]
    with ThreadPoolExecutor(8) as pool:
        trials = list(pool.map(lambda _: store.next_trial("tabs", pair_ids, random.Random())["id"], range(8)))
    assert len(set(trials)) == 1

    def attempt(choice):
        try:
            store.record_vote(trials[0], choice, 10)
            return 200
        except Exception as refused:
            return refused.status

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(attempt, ["left", "right"] * 4))
    assert sorted(statuses) == [200] + [409] * 7
    assert len(store.votes()) == 1


def test_time_limit_is_announced(study):
    client = TestClient(create_app(study["store"], study["pair_ids"], time_limit=2.5))
    assert client.get("/api/next", params={"rater": "x"}).json()["time_limit_ms"] == 2500
    with pytest.raises(ValueError):
        create_app(study["store"], study["pair_ids"], time_limit=0)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_results_text_and_json(study, capsys):
    client = study["client"]
    for rater in ("alice", "bob"):
        while not (data := client.get("/api/next", params={"rater": rater}).json())["done"]:
            trial = study["store"].trial(data["trial"])
            choice = "left" if trial["left_method"] == "crn" else "right"  # both always prefer crn ...
            if rater == "bob" and data["completed"] == 2:
                choice = "right" if choice == "left" else "left"  # ... except bob's last vote
            assert vote(client, data["trial"], choice).status_code == 200
    assert main(["study", "results", str(study["db"]), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    (row,) = summary["comparisons"]
    assert (summary["votes"], summary["raters"]) == (6, 2)
    assert (row["method_a"], row["wins_a"], row["wins_b"], row["votes"], row["raters"], row["pairs"]) == (
        "crn", 5, 1, 6, 2, 3)
    assert row["p_value"] == 0.21875  # 2·(1 + 6)/64
    assert main(["study", "results", str(study["db"])]) == 0
    text = capsys.readouterr().out
    assert "6 vote(s) from 2 rater(s)" in text and "crn preferred in 5/6 = 83.3%" in text


def test_cli_results_errors(tmp_path, capsys):
    assert main(["study", "results", str(tmp_path / "missing.sqlite")]) == 2
    assert "no such study database" in capsys.readouterr().err
    (tmp_path / "text.sqlite").write_text("not a database at all, but long enough to look like a file " * 5)
    assert main(["study", "results", str(tmp_path / "text.sqlite")]) == 2
    assert "not a database" in capsys.readouterr().err
    sqlite3.connect(tmp_path / "other.sqlite").execute("CREATE TABLE t (x)").connection.commit()
    assert main(["study", "results", str(tmp_path / "other.sqlite")]) == 2
    assert "not a study database" in capsys.readouterr().err


def test_cli_serve_prepare_and_errors(tmp_path, capsys):
    a = write_method(tmp_path / "crn", (200, 30, 30))
    b = write_method(tmp_path / "sims", (30, 30, 200), names=NAMES[1:] + ("extra_04",), suffix=".jpg")
    db = tmp_path / "s.sqlite"
    assert main(["study", "serve", "--a", str(a), "--b", str(b), "--db", str(db), "--prepare-only"]) == 0
    err = capsys.readouterr().err
    assert "2 pairs of crn vs sims" in err and "1 without a counterpart" in err
    assert [s["pairs"] for s in StudyStore(db).studies()] == [2]

    def fails(*args: str) -> str:
        assert main(["study", "serve", *args, "--db", str(db), "--prepare-only"]) == 2
        return capsys.readouterr().err

    assert "both methods are named 'crn'" in fails("--a", str(a), "--b", str(a))
    assert main(["study", "serve", "--a", str(a), "--b", str(a), "--name-b", "crn-again", "--db", str(db),
                 "--prepare-only"]) == 0
    write_method(tmp_path / "other", (0, 0, 0), names=("zzz",))
    assert "no image names in common" in fails("--a", str(a), "--b", str(tmp_path / "other"))
    assert "not a folder" in fails("--a", str(a), "--b", str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    assert "no images" in fails("--a", str(a), "--b", str(tmp_path / "empty"))
    (a / "berlin_01.jpg").write_bytes((a / "berlin_01.png").read_bytes())
    assert "two images named 'berlin_01'" in fails("--a", str(a), "--b", str(b))
    (a / "berlin_01.jpg").unlink()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["study", "serve", "--a", str(a), "--b", str(b), "--db", str(db), "--port", str(port)]) == 2
        assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
    for limit in ("0", "-1", "inf", "nan"):
        assert main(["study", "serve", "--a", str(a), "--b", str(b), "--db", str(db), "--time-limit", limit,
                     "--prepare-only"]) == 2
        assert "--time-limit must be a positive" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not a database " * 20)
    assert main(["study", "serve", "--a", str(a), "--b", str(b), "--db", str(tmp_path / "notes.txt"),
                 "--prepare-only"]) == 2
    assert "cannot use as a study database" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ run directories
def write_folder_dataset(root: Path, count: int = 3) -> Path:
    """A three-class folder dataset (train/ and val/, images/ and labels/) small enough for a 2-step CRN."""
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]], dtype=np.uint8)
    for split in ("train", "val"):
        for index in range(count):
            label = np.zeros((24, 32), np.uint8)
            label[:, 8 + 4 * index:] = 1
            label[4:12, 2:10] = 2
            for kind, array in (("images", colours[label]), ("labels", label)):
                (root / split / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / split / kind / f"{split}_{index}.png")
    (root / "classes.tsv").write_text("0\tred\t200,40,40\n1\tgreen\t40,200,40\n2\tblue\t40,40,200\n")
    return root


def test_serve_synthesizes_a_run_directory_once(tmp_path, capsys):
    from inverseg.pipeline import Pipeline

    data = write_folder_dataset(tmp_path / "data")
    run = tmp_path / "crn-tiny"
    assert main(["train", "--config", "crn-cpu", "--out", str(run), "--quiet", "data.dataset=folder",
                 f"data.path={data}", "data.size=[24,32]", "model.widths=[16,16,16]", "model.base_grid=[6,8]",
                 "loss.layers=[relu1_2,relu2_2]", "loss.rebalance_at=4", "loss.window=2", "train.minutes=null",
                 "train.steps=2", "train.checkpoint_every=2", "train.sample_every=2", "train.num_samples=2",
                 "train.tensorboard=false"]) == 0
    capsys.readouterr()
    db = tmp_path / "studies" / "crn-vs-real.sqlite"
    serve = ["study", "serve", "--a", str(run), "--b", str(data / "val" / "images"), "--name-b", "real",
             "--labels", str(data / "val" / "labels"), "--db", str(db), "--prepare-only"]
    assert main(serve) == 0
    err = capsys.readouterr().err
    assert "synthesizing 3 image(s)" in err and "3 pairs of crn-tiny vs real" in err
    cache = tmp_path / "studies" / "crn-vs-real-images" / "crn-tiny"
    synthesized = sorted(cache.glob("*.png"))
    assert [p.name for p in synthesized] == ["val_0.png", "val_1.png", "val_2.png"]
    expected = Pipeline.from_pretrained(run)(data / "val" / "labels" / "val_1.png", seed=0)[0]
    assert np.array_equal(np.asarray(Image.open(cache / "val_1.png")), np.asarray(expected))
    stamps = [p.stat().st_mtime_ns for p in synthesized]

    assert main(serve) == 0  # the second time the cache is used, and the pairs keep their ids
    assert "synthesizing" not in capsys.readouterr().err
    assert [p.stat().st_mtime_ns for p in synthesized] == stamps
    store = StudyStore(db)
    assert [(s["method_a"], s["method_b"], s["pairs"]) for s in store.studies()] == [("crn-tiny", "real", 3)]

    assert main(serve + ["--seed", "1"]) == 0  # another seed invalidates the cache
    assert "synthesizing 3 image(s)" in capsys.readouterr().err
    assert main(["study", "serve", "--a", str(run), "--b", str(data / "val" / "images"), "--db", str(db),
                 "--prepare-only"]) == 2
    assert "is a run directory: pass --labels DIR" in capsys.readouterr().err
