"""Layers shared by the adversarial methods (pix2pixHD, SPADE, and later OASIS, CC-FPSE, LGGAN, SAFM)."""

from .condconv import conditional_depthwise_conv
from .discriminator import (
    MultiScaleDiscriminator,
    PatchDiscriminator,
    TwoStreamPatchDiscriminator,
    num_layers_from_pix2pixhd,
    num_layers_from_spade,
)
from .ema import (effective_spectral_norms, make_ema, recalibrate_batch_norm, renormalize_spectral_norm,
                  update_ema)
from .layers import (
    check_divisible,
    conv_norm,
    count_parameters,
    downsample_avg,
    initialize,
    largest_singular_value,
    param_free_norm,
    spectral_norm,
)
from .pooling import broadcast_segments, instance_average_pool, segment_index, segment_mean
from .safm import SAFM, ShapeConditioning
from .spade import SPADE, SPADEResBlock

__all__ = [
    "SAFM", "SPADE", "MultiScaleDiscriminator", "PatchDiscriminator", "SPADEResBlock", "ShapeConditioning",
    "TwoStreamPatchDiscriminator", "broadcast_segments", "check_divisible", "conditional_depthwise_conv",
    "conv_norm", "count_parameters", "downsample_avg", "effective_spectral_norms", "initialize",
    "instance_average_pool", "largest_singular_value", "make_ema", "num_layers_from_pix2pixhd",
    "num_layers_from_spade", "param_free_norm", "recalibrate_batch_norm", "renormalize_spectral_norm",
    "segment_index", "segment_mean", "spectral_norm", "update_ema",
]
