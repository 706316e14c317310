"""In-memory event containers shared by the kernels, the detector and the I/O layer.

Kernels fill *flat, preallocated* arrays with a fixed maximum number ``k`` of particles
(or tracks, photons) per event and a per-event count; the I/O layer turns them into jagged
Parquet lists. All momenta and vertices are in the **lab frame**: GeV, cm, ns.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

__all__ = ["RecoChunk", "TruthChunk", "concatenate_reco", "concatenate_truth"]


@dataclass
class TruthChunk:
    """Generator-level particles of ``n`` events, at most ``k`` particles each.

    Attributes
    ----------
    npart : int16[n]
        Number of valid particle slots per event (slots ``npart[i]:k`` are padding).
    pdg : int32[n, k]
        PDG code (signed: 11 = e-, -11 = e+, 22 = photon, 13 = mu-, 211 = pi+, 1023 = A').
    p4 : float64[n, k, 4]
        Lab-frame 4-momentum (px, py, pz, E) [GeV].
    vtx : float64[n, k, 3]
        Lab-frame production vertex (vx, vy, vz) [cm].
    parent : int16[n, k]
        Index of the parent particle within the event, -1 for particles from the e+e- collision.
    weight : float64[n]
        Event weight [nb/event] for weighted runs; 1.0 for unweighted runs.
    extra : dict[str, ndarray[n]]
        Process-specific event-level truth (e.g. ``"x_cms"`` ISR photon energy fraction,
        ``"m_true"`` [GeV], ``"decay_length_cm"``).
    """

    npart: np.ndarray
    pdg: np.ndarray
    p4: np.ndarray
    vtx: np.ndarray
    parent: np.ndarray
    weight: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.npart.shape[0])

    @property
    def k(self) -> int:
        return int(self.pdg.shape[1])

    @classmethod
    def empty(cls, n: int, k: int, extra: tuple[str, ...] = ()) -> TruthChunk:
        return cls(
            npart=np.zeros(n, np.int16),
            pdg=np.zeros((n, k), np.int32),
            p4=np.zeros((n, k, 4)),
            vtx=np.zeros((n, k, 3)),
            parent=np.full((n, k), -1, np.int16),
            weight=np.ones(n),
            extra={name: np.zeros(n) for name in extra},
        )

    def slice(self, start: int, stop: int) -> TruthChunk:
        return TruthChunk(
            self.npart[start:stop], self.pdg[start:stop], self.p4[start:stop],
            self.vtx[start:stop], self.parent[start:stop], self.weight[start:stop],
            {key: v[start:stop] for key, v in self.extra.items()},
        )


def concatenate_truth(chunks: list[TruthChunk]) -> TruthChunk:
    """Concatenate chunks with the same ``k`` and the same ``extra`` fields."""
    first = chunks[0]
    return TruthChunk(
        np.concatenate([c.npart for c in chunks]),
        np.concatenate([c.pdg for c in chunks]),
        np.concatenate([c.p4 for c in chunks]),
        np.concatenate([c.vtx for c in chunks]),
        np.concatenate([c.parent for c in chunks]),
        np.concatenate([c.weight for c in chunks]),
        {key: np.concatenate([c.extra[key] for c in chunks]) for key in first.extra},
    )


@dataclass
class RecoChunk:
    """Detector-level objects of ``n`` events (filled by :mod:`isrsim.detector`).

    Tracks: perigee helix parameters with respect to the nominal IP (origin) in the lab
    frame, basf2-like convention (see :mod:`isrsim.helix`): d0 [cm], phi0 [rad],
    omega [1/cm], z0 [cm], tanl; ``cov`` the 15 upper-triangle elements (row-major) of the
    5x5 covariance in that order. Photons: calorimeter clusters (E [GeV], theta, phi [rad]).
    ``*_truth`` is the index of the generating particle in the event's truth list.
    Event-level or per-object fields not listed here go into ``track_extra`` /
    ``photon_extra`` (arrays [n, kt] / [n, kg]) and are written as further list fields.
    ``kt``/``kg`` are the slots per event (``simulate`` sizes them to the chunk); slots beyond
    ``ntrk``/``nphot`` are zero (truth index -1).
    """

    ntrk: np.ndarray          # int16[n]
    charge: np.ndarray        # int8[n, kt]
    helix: np.ndarray         # float64[n, kt, 5]
    cov: np.ndarray           # float64[n, kt, 15]
    trk_truth: np.ndarray     # int16[n, kt]
    nphot: np.ndarray         # int16[n]
    phot: np.ndarray          # float64[n, kg, 3]  (E, theta, phi)
    phot_truth: np.ndarray    # int16[n, kg]
    track_extra: dict[str, np.ndarray] = field(default_factory=dict)
    photon_extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.ntrk.shape[0])


def concatenate_reco(chunks: list[RecoChunk]) -> RecoChunk:
    """Concatenate reco chunks with the same extra fields; per-event slots are padded to the
    widest chunk (zeros, truth index -1)."""

    def cat(arrays: list[np.ndarray], fill: float) -> np.ndarray:
        if arrays[0].ndim == 1:
            return np.concatenate(arrays)
        width = max(a.shape[1] for a in arrays)
        return np.concatenate([np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2),
                                      constant_values=fill) for a in arrays])

    arrays = {f.name: cat([getattr(c, f.name) for c in chunks], -1 if f.name.endswith("truth") else 0)
              for f in fields(RecoChunk) if not f.name.endswith("_extra")}
    extras = {name: {key: cat([getattr(c, name)[key] for c in chunks], 0)
                     for key in getattr(chunks[0], name)}
              for name in ("track_extra", "photon_extra")}
    return RecoChunk(**arrays, **extras)
