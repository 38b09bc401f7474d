"""The study server under hostile load (benchmarks/web_load.py): never a 5xx, memory stays bounded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "web_load.py"


def run_load(requests: int, client_timeout: float) -> dict:
    done = subprocess.run([sys.executable, str(SCRIPT), "--requests", str(requests), "--concurrency", "8",
                           "--client-timeout", str(client_timeout), "--seconds", "240"],
                          capture_output=True, text=True, timeout=600)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, report
    return report


def test_malformed_oversized_and_slow_requests_get_no_5xx():
    report = run_load(120, client_timeout=3)
    assert report["requests"] == 120 and report["server_errors_5xx"] == 0 and report["server_alive"]
    for kind in ("malformed_json", "oversized", "garbage_request_line", "results_no_token"):
        if kind in report["by_kind"]:
            assert set(report["by_kind"][kind]) <= {"400", "401", "413"}, (kind, report["by_kind"][kind])
    assert report["rss_mb_after"] < report["rss_mb_before"] + 100


@pytest.mark.slow
def test_thousand_requests():
    report = run_load(1000, client_timeout=15)
    print(json.dumps({k: v for k, v in report.items() if k != "by_kind"}))
    assert report["requests"] == 1000 and report["server_errors_5xx"] == 0
