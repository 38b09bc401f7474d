"""Presets against the official recipes: the CamVid CPU presets keep each official code's data augmentation."""

from __future__ import annotations

import pytest

from inverseg.config import load_run_config

# (CamVid CPU preset, the paper preset it scales down, the official horizontal-flip default)
FLIPS = [
    ("pix2pixhd-camvid-cpu", "pix2pixhd-512p", True),    # --no_flip off by default (implementations.md §3.4)
    ("spade-camvid-cpu", "spade-cityscapes", True),      # SPADE base_options: --no_flip off by default
    ("spade-camvid-cpu-vae", "spade-cityscapes", True),
    ("oasis-camvid-cpu", "oasis-cityscapes", True),      # --no_flip off by default (implementations.md §5.5)
    ("sesame-camvid-cpu", "sesame-cityscapes", True),    # prob_flip 0.5 (methods-later.md §3.1)
    ("safm-camvid-cpu", "safm-cityscapes", True),        # SPADE fork, --no_flip off by default
    ("crn-camvid-cpu", "crn-256p", False),               # demo_256p.py feeds the cached images as they are
    ("sims-camvid-cpu", "sims-256p", False),             # synthesis_*.py: no flips
]


@pytest.mark.parametrize("preset, paper, official", FLIPS)
def test_camvid_cpu_presets_flip_as_the_official_code(preset, paper, official):
    """Issue 11 §5: the CamVid presets used to inherit flip: false from the procedural-scene presets."""
    assert load_run_config(paper).data.flip is official
    assert load_run_config(preset).data.flip is official


VAE = [("spade-camvid-cpu", "spade-cityscapes"), ("safm-camvid-cpu", "safm-cityscapes"),
       ("ccfpse-camvid-cpu", "ccfpse-cityscapes"), ("lggan-camvid-cpu", "lggan-cityscapes")]


@pytest.mark.parametrize("preset, paper", VAE)
def test_camvid_cpu_presets_keep_the_official_vae_setting(preset, paper):
    """Issue 11 §3: a CamVid preset that samples z from the prior starts from noise instead of the layout."""
    official = load_run_config(paper).settings.vae.enabled
    assert load_run_config(preset).settings.vae.enabled is official
