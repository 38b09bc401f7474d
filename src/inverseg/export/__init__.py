"""Inference export: a trained run's synthesis network as a self-describing ONNX file, and its runtime.

``export_onnx(pipe, path)`` (``inverseg export``) writes the network that turns a label map into an image, with
every random quantity of the method (SPADE's z, OASIS's 3D noise, pix2pixHD's cluster features, SIMS's canvas)
as an explicit graph input, and so is SAFM's shape descriptor (a flood fill per region, which ONNX cannot do).  ``load_onnx_pipeline(path)`` (``inverseg synthesize --model``) rebuilds a
:class:`~inverseg.pipeline.Pipeline` from the file alone: it draws those inputs exactly as the eager method does,
so the same seed gives the same images, computes SAFM's descriptor as the eager method does, and runs the graph
with onnxruntime.
"""

from __future__ import annotations

from .onnx import EXPORTABLE_METHODS, ExportError, export_onnx
from .runtime import load_onnx_pipeline

__all__ = ["EXPORTABLE_METHODS", "ExportError", "export_onnx", "load_onnx_pipeline"]
