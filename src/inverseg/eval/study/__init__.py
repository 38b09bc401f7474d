"""Pairwise preference study (the CRN and SIMS papers' Mechanical-Turk protocol, run on a local web page).

``store`` keeps studies, trials and votes in SQLite; ``stats`` has the Wilson interval and the exact binomial
test; ``sources`` turns folders or run directories into matched image pairs; ``server`` is the FastAPI app.
The server module is not imported here so that reading results needs neither FastAPI nor uvicorn.
"""

from .stats import binomial_test, wilson_interval
from .store import StudyError, StudyStore, summarize

__all__ = ["StudyError", "StudyStore", "binomial_test", "summarize", "wilson_interval"]
