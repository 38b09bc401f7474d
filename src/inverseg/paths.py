"""Where inverseg keeps downloaded weights and cached statistics.

``INVERSEG_CACHE`` overrides the default ``$XDG_CACHE_HOME/inverseg`` (``~/.cache/inverseg``).  Standard
third-party files (torchvision VGG, pytorch-fid Inception) are looked up in torch hub's checkpoint folder,
``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    if os.environ.get("INVERSEG_CACHE"):
        return Path(os.environ["INVERSEG_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return base / "inverseg"


def weights_dir() -> Path:
    return cache_dir() / "weights"


def torch_hub_checkpoints() -> Path:
    torch_home = os.environ.get("TORCH_HOME")
    base = Path(torch_home).expanduser() if torch_home else Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "torch"
    return base / "hub" / "checkpoints"
