"""Load test of the web server: malformed, oversized, slow and concurrent requests; no 5xx, bounded memory.

Starts ``inverseg study serve`` on a free 127.0.0.1 port with two folders of small generated images, then sends
``--requests`` requests from ``--concurrency`` threads: well-formed votes and pages, malformed JSON, wrong types,
unknown trials and routes, oversized bodies (up to 8 MB), absurd query strings, and slow clients that trickle
their headers or stall mid-body.  It stops by itself (``--seconds`` bound) and prints JSON: status counts, the
number of 5xx answers and connection errors, and the server's RSS before and after.

    python benchmarks/web_load.py --requests 1000 --concurrency 16
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def raw_request(port: int, data: bytes, trickle: float = 0.0, timeout: float = 15.0) -> int:
    """Send raw bytes (optionally a few bytes at a time); return the HTTP status, or 0 when the server hung up or
    did not answer within ``timeout`` (a client that stalls mid-body waits for the server's own timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        try:
            if trickle:
                for start in range(0, len(data), 7):
                    connection.sendall(data[start:start + 7])
                    time.sleep(trickle)
            else:
                connection.sendall(data)
        except ConnectionError:  # the server answered early (e.g. 413 on Content-Length) and closed: read it
            pass
        try:
            answer = connection.recv(64)
        except (ConnectionError, socket.timeout):
            return 0
    try:
        return int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def http(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def cases(rng: random.Random, trial: str) -> list[tuple[str, bytes, float]]:
    """(kind, raw request, trickle seconds between 7-byte pieces)."""
    vote = json.dumps({"trial": trial, "choice": "left", "ms": 1200}).encode()
    junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
    return [
        ("page", http("GET", "/"), 0.0),
        ("next", http("GET", f"/api/next?rater=load{rng.randint(0, 50)}"), 0.0),
        ("vote", http("POST", "/api/vote", vote, {"Content-Type": "application/json"}), 0.0),
        ("malformed_json", http("POST", "/api/vote", b'{"trial": ', {"Content-Type": "application/json"}), 0.0),
        ("wrong_types", http("POST", "/api/vote", json.dumps({"trial": 5, "choice": [], "ms": "x"}).encode()), 0.0),
        ("nan_ms", http("POST", "/api/vote", b'{"trial": "t", "choice": "left", "ms": NaN}'), 0.0),
        ("huge_int", http("POST", "/api/vote", b'{"trial": "t", "choice": "left", "ms": 1' + b"0" * 5000 + b"}"), 0.0),
        ("oversized", http("POST", "/api/vote", b"x" * rng.choice([5_000, 100_000, 8_000_000])), 0.0),
        ("binary_junk", http("POST", "/api/vote", junk), 0.0),
        ("unknown_trial", http("GET", f"/image/{rng.getrandbits(64):x}/left"), 0.0),
        ("bad_side", http("GET", f"/image/{trial}/middle"), 0.0),
        ("traversal", http("GET", "/static/..%2F..%2Fstore.py"), 0.0),
        ("long_query", http("GET", "/api/next?rater=" + "a" * 20_000), 0.0),
        ("results_no_token", http("GET", "/api/results"), 0.0),
        ("wrong_method", http("DELETE", "/api/vote"), 0.0),
        ("garbage_request_line", junk + b"\r\n\r\n", 0.0),
        ("slow_headers", http("GET", "/api/config"), 0.02),
        ("stalled_body", http("POST", "/api/vote", vote)[:-10], 0.0),  # promises more body than it sends
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=300, help="stop after this long in any case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--client-timeout", type=float, default=15.0,
                        help="seconds a client waits for an answer (stalled bodies wait this long)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="inverseg-load-"))
    for side in ("a", "b"):
        (root / side).mkdir()
        for index in range(20):
            Image.fromarray(np.full((32, 48, 3), index * 10 + (side == "b") * 5, np.uint8)).save(
                root / side / f"img{index}.png")
    port = free_port()
    server_log = open(root / "server.log", "w")  # a pipe nobody reads would fill up and stall the server
    server = subprocess.Popen([sys.executable, "-m", "inverseg.cli.main", "study", "serve", "--a", str(root / "a"),
                               "--b", str(root / "b"), "--db", str(root / "study.sqlite"), "--port", str(port)],
                              stdout=server_log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180  # imports take long on a busy machine
        while not (_listening(port) and raw_request(port, http("GET", "/api/config"), timeout=2) == 200):
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        rss_before = rss_mb(server.pid)
        first = json.loads(_get_body(port, "/api/next?rater=probe"))
        trial = first.get("trial", "none")
        plan = [rng.choice(cases(rng, trial)) for _ in range(args.requests)]
        statuses: Counter = Counter()
        by_kind: dict[str, Counter] = {}
        lock = threading.Lock()
        stop_at = time.monotonic() + args.seconds

        def worker(items):
            for kind, data, trickle in items:
                if time.monotonic() > stop_at:
                    return
                try:
                    status = raw_request(port, data, trickle, timeout=args.client_timeout)
                except OSError:
                    status = 0
                with lock:
                    statuses[status] += 1
                    by_kind.setdefault(kind, Counter())[status] += 1

        threads = [threading.Thread(target=worker, args=(plan[i::args.concurrency],))
                   for i in range(args.concurrency)]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.monotonic() - start
        alive = server.poll() is None
        rss_after = rss_mb(server.pid) if alive else float("nan")
        report = {
            "requests": sum(statuses.values()), "concurrency": args.concurrency, "seconds": round(seconds, 1),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "server_errors_5xx": sum(v for k, v in statuses.items() if 500 <= k < 600),
            "closed_without_answer": statuses.get(0, 0),
            "server_alive": alive, "rss_mb_before": rss_before, "rss_mb_after": rss_after,
            "by_kind": {kind: {str(k): v for k, v in sorted(c.items())} for kind, c in sorted(by_kind.items())},
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    print(json.dumps(report))
    return 0 if report["server_errors_5xx"] == 0 and report["server_alive"] else 1


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _get_body(port: int, path: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(http("GET", path))
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode()


if __name__ == "__main__":
    sys.exit(main())
