"""Pretrained, frozen perception networks (VGG for perceptual losses, MobileNetV2 for segmentation and
Fréchet distances) and the offline sources of their weights.  All take images in [-1, 1] RGB."""

from .mobilenet import FEATURE_DIM, STAGE_CHANNELS, STAGE_STRIDES, MobileNetV2, load_mobilenet_v2
from .vgg import DEFAULT_LAYERS, VGGFeatures, arch_of, layer_indices, load_vgg
from .weights import (
    STANDARD_FILES,
    FetchResult,
    WeightRow,
    WeightsError,
    WeightsMissingError,
    WeightsWarning,
    fetch,
    list_weights,
    resolve_inception,
    resolve_mobilenet_v2,
    resolve_vgg,
)

__all__ = [
    "DEFAULT_LAYERS", "FEATURE_DIM", "STAGE_CHANNELS", "STAGE_STRIDES", "STANDARD_FILES",
    "FetchResult", "MobileNetV2", "VGGFeatures", "WeightRow", "WeightsError", "WeightsMissingError",
    "WeightsWarning", "arch_of", "fetch", "layer_indices", "list_weights", "load_mobilenet_v2", "load_vgg",
    "resolve_inception", "resolve_mobilenet_v2", "resolve_vgg",
]
