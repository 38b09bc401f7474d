"""SQLite storage of a preference study: studies, image pairs, trials (side assignments) and votes.

A *pair* is one layout shown by two methods.  A *trial* is one pair assigned to one rater with the sides
fixed by the server, under a random unguessable id; a *vote* answers exactly one trial.  The database
enforces the protocol itself, so that a bug or a replayed request cannot bend it: one trial per (rater,
pair), one vote per trial, choice ∈ {left, right}, non-negative response time.

Every vote row is self-contained (rater, pair, both methods, which one was on the left, the answer, the
method chosen, milliseconds, UTC timestamp), so results can be computed from the ``votes`` table alone.
A connection is opened per operation: the web server calls in from several threads.
"""

from __future__ import annotations

import random
import secrets
import sqlite3
import threading
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ...errors import InversegError

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id        INTEGER PRIMARY KEY,
    method_a  TEXT NOT NULL,
    method_b  TEXT NOT NULL,
    created   TEXT NOT NULL,
    UNIQUE (method_a, method_b)
);
CREATE TABLE IF NOT EXISTS pairs (
    id        INTEGER PRIMARY KEY,
    study_id  INTEGER NOT NULL REFERENCES studies (id),
    name      TEXT NOT NULL,
    image_a   TEXT NOT NULL,
    image_b   TEXT NOT NULL,
    UNIQUE (study_id, name)
);
CREATE TABLE IF NOT EXISTS trials (
    id            TEXT PRIMARY KEY,
    pair_id       INTEGER NOT NULL REFERENCES pairs (id),
    rater         TEXT NOT NULL,
    left_method   TEXT NOT NULL,
    right_method  TEXT NOT NULL,
    created       TEXT NOT NULL,
    UNIQUE (rater, pair_id)
);
CREATE TABLE IF NOT EXISTS votes (
    id            INTEGER PRIMARY KEY,
    trial_id      TEXT NOT NULL UNIQUE REFERENCES trials (id),
    pair_id       INTEGER NOT NULL REFERENCES pairs (id),
    rater         TEXT NOT NULL,
    left_method   TEXT NOT NULL,
    right_method  TEXT NOT NULL,
    choice        TEXT NOT NULL CHECK (choice IN ('left', 'right')),
    chosen        TEXT NOT NULL,
    ms            INTEGER NOT NULL CHECK (ms >= 0),
    created       TEXT NOT NULL
);
"""


class StudyError(InversegError):
    """A request the protocol refuses; ``status`` is the HTTP status the server answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StudyStore:
    def __init__(self, path: str | Path, create: bool = True):
        """``create=False`` opens an existing study database only (for reading results)."""
        self.path = Path(path)
        self._assign_lock = threading.Lock()  # two tabs of one rater must not both draw a new trial
        if not create:
            if not self.path.is_file():
                raise StudyError(f"{self.path}: no such study database", 404)
            try:
                with self.connect() as db:
                    tables = {row["name"] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            except sqlite3.DatabaseError as error:
                raise StudyError(f"{self.path}: {error}", 400) from None
            if not {"studies", "pairs", "trials", "votes"} <= tables:
                raise StudyError(f"{self.path}: not a study database (made by 'inverseg study serve')", 400)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.connect() as db:
                db.executescript(SCHEMA)
        except sqlite3.DatabaseError as error:  # not an SQLite file, a folder, read-only …
            raise StudyError(f"{self.path}: cannot use as a study database ({error})", 400) from None

    @contextmanager
    def connect(self):
        """A connection in one transaction (committed on success), closed afterwards."""
        with closing(sqlite3.connect(self.path, timeout=30)) as db:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA foreign_keys = ON")
            with db:
                yield db

    # ------------------------------------------------------------------ setting up
    def ensure_study(self, method_a: str, method_b: str) -> int:
        with self.connect() as db:
            db.execute("INSERT OR IGNORE INTO studies (method_a, method_b, created) VALUES (?, ?, ?)",
                       (method_a, method_b, now()))
            row = db.execute("SELECT id FROM studies WHERE method_a = ? AND method_b = ?",
                             (method_a, method_b)).fetchone()
        return int(row["id"])

    def add_pairs(self, study_id: int, pairs: list[tuple[str, str, str]]) -> list[int]:
        """Register (name, image_a, image_b); a pair seen before keeps its id (and gets the new paths)."""
        ids = []
        with self.connect() as db:
            for name, image_a, image_b in pairs:
                db.execute(
                    "INSERT INTO pairs (study_id, name, image_a, image_b) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (study_id, name) DO UPDATE SET image_a = excluded.image_a, image_b = excluded.image_b",
                    (study_id, name, str(image_a), str(image_b)))
                row = db.execute("SELECT id FROM pairs WHERE study_id = ? AND name = ?", (study_id, name)).fetchone()
                ids.append(int(row["id"]))
        return ids

    # ------------------------------------------------------------------ trials
    def next_trial(self, rater: str, pair_ids: list[int], rng: random.Random) -> dict | None:
        """The rater's open trial if any (so a reload shows the same sides), else a new one on a random
        pair the rater has not seen, with random sides; None when every pair is done."""
        with self._assign_lock, self.connect() as db:
            marks = ",".join("?" * len(pair_ids))
            open_trial = db.execute(
                f"SELECT t.id FROM trials t LEFT JOIN votes v ON v.trial_id = t.id "
                f"WHERE t.rater = ? AND v.id IS NULL AND t.pair_id IN ({marks}) ORDER BY t.created, t.id LIMIT 1",
                (rater, *pair_ids)).fetchone()
            if open_trial:
                return self._trial(db, open_trial["id"])
            seen = {row["pair_id"] for row in db.execute("SELECT pair_id FROM trials WHERE rater = ?", (rater,))}
            unseen = [pair_id for pair_id in pair_ids if pair_id not in seen]
            if not unseen:
                return None
            pair = db.execute("SELECT p.id, s.method_a, s.method_b FROM pairs p JOIN studies s ON s.id = p.study_id "
                              "WHERE p.id = ?", (rng.choice(unseen),)).fetchone()
            left, right = pair["method_a"], pair["method_b"]
            if rng.random() < 0.5:
                left, right = right, left
            trial_id = secrets.token_urlsafe(12)
            db.execute("INSERT INTO trials (id, pair_id, rater, left_method, right_method, created) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (trial_id, pair["id"], rater, left, right, now()))
            return self._trial(db, trial_id)

    def trial(self, trial_id: str) -> dict | None:
        with self.connect() as db:
            return self._trial(db, trial_id)

    @staticmethod
    def _trial(db, trial_id: str) -> dict | None:
        row = db.execute(
            "SELECT t.id, t.pair_id, t.rater, t.left_method, t.right_method, p.name, p.image_a, p.image_b, "
            "s.method_a, s.method_b FROM trials t JOIN pairs p ON p.id = t.pair_id JOIN studies s ON s.id = p.study_id "
            "WHERE t.id = ?", (trial_id,)).fetchone()
        if row is None:
            return None
        trial = dict(row)
        by_method = {row["method_a"]: row["image_a"], row["method_b"]: row["image_b"]}
        trial["left_image"] = by_method[row["left_method"]]
        trial["right_image"] = by_method[row["right_method"]]
        return trial

    def progress(self, rater: str, pair_ids: list[int]) -> int:
        """How many of these pairs the rater has voted on."""
        with self.connect() as db:
            marks = ",".join("?" * len(pair_ids))
            row = db.execute(f"SELECT COUNT(*) AS n FROM votes WHERE rater = ? AND pair_id IN ({marks})",
                             (rater, *pair_ids)).fetchone()
        return int(row["n"])

    # ------------------------------------------------------------------ votes
    def record_vote(self, trial_id: str, choice: str, ms: int) -> dict:
        """Store the answer to a trial; raises StudyError (404 unknown trial, 409 already answered)."""
        if choice not in ("left", "right"):
            raise StudyError(f"choice must be 'left' or 'right', got {choice!r}", 400)
        with self.connect() as db:
            trial = self._trial(db, trial_id)
            if trial is None:
                raise StudyError(f"unknown trial {trial_id!r}", 404)
            chosen = trial["left_method"] if choice == "left" else trial["right_method"]
            vote = {"trial_id": trial_id, "pair_id": trial["pair_id"], "rater": trial["rater"],
                    "left_method": trial["left_method"], "right_method": trial["right_method"],
                    "choice": choice, "chosen": chosen, "ms": int(ms), "created": now()}
            try:
                db.execute(f"INSERT INTO votes ({', '.join(vote)}) VALUES ({', '.join('?' * len(vote))})",
                           tuple(vote.values()))
            except sqlite3.IntegrityError:
                raise StudyError(f"trial {trial_id!r} has already been answered", 409) from None
        return vote

    def votes(self) -> list[dict]:
        """Every vote with its study's method order, oldest first."""
        with self.connect() as db:
            rows = db.execute(
                "SELECT v.*, p.name AS pair_name, s.method_a, s.method_b FROM votes v "
                "JOIN pairs p ON p.id = v.pair_id JOIN studies s ON s.id = p.study_id ORDER BY v.id").fetchall()
        return [dict(row) for row in rows]

    def studies(self) -> list[dict]:
        with self.connect() as db:
            rows = db.execute("SELECT s.*, COUNT(p.id) AS pairs FROM studies s LEFT JOIN pairs p "
                              "ON p.study_id = s.id GROUP BY s.id ORDER BY s.id").fetchall()
        return [dict(row) for row in rows]


def summarize(store: StudyStore, confidence: float = 0.95) -> dict:
    """Per pair of methods (in the order of the study that first paired them): counts, rate, CI, p-value."""
    from .stats import compare

    groups: dict[frozenset, tuple[str, str]] = {}
    for study in store.studies():
        groups.setdefault(frozenset((study["method_a"], study["method_b"])), (study["method_a"], study["method_b"]))
    votes = store.votes()
    comparisons = []
    for key, (method_a, method_b) in groups.items():
        selected = [vote for vote in votes if frozenset((vote["method_a"], vote["method_b"])) == key]
        comparisons.append(compare(method_a, method_b, selected, confidence))
    return {"database": str(store.path), "votes": len(votes), "raters": len({v["rater"] for v in votes}),
            "comparisons": comparisons}
