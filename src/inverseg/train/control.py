"""What ends a training run and how its progress is shown: time budgets, stop signals, the progress bar.

Kept apart from the loop so that each piece reads on its own:
  * ``Budget``: ``train.minutes`` (wall clock) and ``train.cpu_minutes`` (process CPU time, spanning resumes).
  * ``StopSignals``: SIGTERM / SIGINT / SIGUSR1 ask the run to stop after the current step; a second one exits now.
  * ``TrainingProgress``: a bar against whichever limit ends the run first — steps or a time budget — so that a
    4-minute budgeted run shows a 4-minute ETA, not the ETA of its 100,000-step ceiling.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time

from tqdm import tqdm

from ..errors import InversegError

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name))


class NonFiniteTraining(InversegError, RuntimeError):
    """Losses stayed NaN/Inf after the allowed rollbacks; the message names the last good checkpoint."""


class Budget:
    """The wall-clock and CPU-time limits of a run (``inf`` when unset)."""

    def __init__(self, train, start_wall: float, start_cpu: float):
        self.wall = train.minutes * 60 if train.minutes is not None else math.inf
        self.cpu = train.cpu_minutes * 60 if train.cpu_minutes is not None else math.inf
        self.start_wall, self.start_cpu = start_wall, start_cpu

    def used(self) -> tuple[float, float]:
        return time.monotonic() - self.start_wall, time.process_time() - self.start_cpu

    def exhausted(self) -> str:
        """'time' or 'cpu_time' when a budget has run out, else ''."""
        wall, cpu = self.used()
        return "time" if wall > self.wall else "cpu_time" if cpu > self.cpu else ""

    def fraction(self) -> float:
        """The largest used fraction of a time budget (0 without one)."""
        wall, cpu = self.used()
        return max(wall / self.wall if self.wall < math.inf else 0.0, cpu / self.cpu if self.cpu < math.inf else 0.0)

    @property
    def bounded(self) -> bool:
        return self.wall < math.inf or self.cpu < math.inf


class StopSignals:
    """Context manager: the first stop signal sets ``received`` (e.g. 'SIGTERM'); a second raises SystemExit.

    Handlers are installed only in the main thread (Python allows no other) and the previous ones are restored
    on exit.  The loop checks ``received`` between steps, so a checkpoint is always written at a step boundary.
    """

    def __init__(self):
        self.received = ""
        self._previous: dict[int, object] = {}

    def _handle(self, number: int, frame) -> None:
        name = signal.Signals(number).name
        if self.received:
            print(f"\n{name} again: exiting now; the last complete checkpoint is kept", file=sys.stderr, flush=True)
            raise SystemExit(128 + number)
        self.received = name
        print(f"\n{name}: finishing this step, then writing a checkpoint (send it again to exit at once)",
              file=sys.stderr, flush=True)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


class TrainingProgress:
    """A tqdm bar in steps — or, when a time budget ends the run first, in percent of that budget."""

    def __init__(self, method: str, total_steps: int, initial_step: int, budget: Budget, enabled: bool = True):
        self.total_steps, self.budget = total_steps, budget
        if budget.bounded:
            self.bar = tqdm(total=100.0, desc=f"train {method}", unit="%", disable=not enabled, dynamic_ncols=True,
                            file=sys.stderr, bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}"
                                                        "{postfix}]")
        else:
            self.bar = tqdm(total=total_steps, initial=initial_step, desc=f"train {method}", unit="step",
                            disable=not enabled, dynamic_ncols=True, file=sys.stderr)
        self._last_postfix = 0.0

    def show(self, step: int, losses: dict[str, float]) -> None:
        if self.budget.bounded:  # whichever limit is nearer decides the fraction, so the ETA is true
            percent = 100.0 * min(1.0, max(step / max(1, self.total_steps), self.budget.fraction()))
            self.bar.update(max(0.0, percent - self.bar.n))
        else:
            self.bar.update(step - self.bar.n)
        now = time.monotonic()
        if now - self._last_postfix > 1.0:  # formatting every step costs more than a tiny step
            self._last_postfix = now
            shown = {"step": step, **{k: f"{v:.3g}" for k, v in list(losses.items())[:4]}}
            self.bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        self.bar.close()
