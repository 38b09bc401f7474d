"""How many CPU threads to use without oversubscribing a busy machine.

OpenMP threads spin while they wait for each other: with more runnable threads than free cores, a thread that
lost its core stalls all the others, and a 0.5 s training step took 7–9 s on this 2-core machine under load ~3.
``auto_threads`` counts the cores this process may use, subtracts what other processes keep busy (the 1-minute load
average minus our own running threads), and never asks for more than is free.  The load average of a container
may include the host's other tenants; pass an explicit ``train.threads`` there if ``auto`` is too cautious.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (CPU affinity / cgroup cpuset), not the machine's total."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def auto_threads(own_threads: int = 0, load: float | None = None, cores: int | None = None) -> int:
    """Threads that fit on the free cores: ``cores − (load − own running threads)``, rounded, at least 1.

    ``own_threads`` is how many threads this process keeps busy now (they are part of the load average);
    ``OMP_NUM_THREADS`` caps the answer when the user set it.
    """
    cores = cores or available_cores()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average (Windows): trust the core count
            load = float(own_threads)
    others = max(0.0, load - own_threads)
    threads = max(1, min(cores, int(cores - others + 0.5)))
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(cap)) if cap.isdigit() and int(cap) > 0 else threads
