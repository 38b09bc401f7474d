"""Methods: one recipe per paper (models, losses, optimisers, training step, sampling).

``get_method(name)`` imports the method's module only when it is used, so that e.g. inference with a CRN never
imports the GAN code.
"""

from __future__ import annotations

import importlib

from .base import InferenceControls, Method

# name → "module:Class"
METHODS = {
    "crn": "inverseg.methods.crn:CRN",
    "pix2pixhd": "inverseg.methods.pix2pixhd:Pix2PixHD",
    "spade": "inverseg.methods.spade:SPADE",
    "sims": "inverseg.methods.sims:SIMS",
    "oasis": "inverseg.methods.oasis:OASIS",
    "safm": "inverseg.methods.safm:SAFM",
    "sesame": "inverseg.methods.sesame:SESAME",
    "ccfpse": "inverseg.methods.ccfpse:CCFPSE",
    "lggan": "inverseg.methods.lggan:LGGAN",
}


def get_method(name: str) -> type[Method]:
    try:
        module_name, class_name = METHODS[name].split(":")
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}") from None
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["METHODS", "InferenceControls", "Method", "get_method"]
