"""Label maps: ids, names, colours, void, remapping, one-hot encodings, instance edges and palettes."""

from .schemes import SCHEMES, get_scheme
from .spec import LabelError, LabelSpec, Palette, guess_ignore_id, instance_edges

__all__ = ["LabelError", "LabelSpec", "Palette", "SCHEMES", "get_scheme", "guess_ignore_id", "instance_edges"]
