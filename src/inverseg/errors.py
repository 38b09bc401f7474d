"""The one base class of every error a user can fix.

Each part of the library keeps its own error class (``LabelError``, ``DatasetError``, ``CheckpointError`` …), all
derived from ``InversegError``, so that the command line can catch "anything the user can fix" in one place and
print it as a single ``error: …`` line (exit status 2) instead of a traceback.  Messages name the file or key, the
offending value and the fix.
"""

from __future__ import annotations


class InversegError(Exception):
    """Something the user can fix; the message is one line: what, where, and how to fix it."""
