"""Parameterised BESIII / Belle II detector models and the fast detector simulation.

Public API::

    from isrsim.detector import load_detector, simulate, add_primary_vertex
    det = load_detector("belle2")          # or "besiii", "belle2_no_pxd2", or a .toml path
    reco = simulate(truth, det, rng)       # TruthChunk -> RecoChunk
"""

from __future__ import annotations

from .material import MaterialLayers
from .model import DetectorModel, available_detectors, load_detector
from .simulate import TRACK_EXTRA_FIELDS, add_primary_vertex, simulate

__all__ = [
    "TRACK_EXTRA_FIELDS",
    "DetectorModel",
    "MaterialLayers",
    "add_primary_vertex",
    "available_detectors",
    "load_detector",
    "simulate",
]
