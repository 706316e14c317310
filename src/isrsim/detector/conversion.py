"""Photon transport through cylindrical material layers and conversion gamma -> e+ e-.

What to use when
----------------
* :func:`convert_photons` -- the entry point for any process: takes a :class:`TruthChunk`, sends
  its final-state photons (or a chosen subset) through the detector's material layers from
  their production vertices, and returns a new chunk with the e+ e- of each conversion
  appended (``parent`` = photon index, vertex = conversion point). Natural mode converts with
  the physical probability; forced mode converts one photon per event in chosen layers and
  multiplies the event weight by the conversion probability (variance reduction, issue 5).
* :func:`transport_photon` -- ``@kernel``: one photon, returns the conversion layer and point.
* :func:`layer_path_segments` -- ``@kernel``: exact ray-cylinder geometry (segments of the
  photon path inside each layer and their thickness in X0).
* :func:`pair_mass_at_pca` -- ``@kernel``: e+ e- invariant mass computed from the momenta at the
  perigee w.r.t. the origin (the "before vertex fit" mass of physics.md 5.4).

Geometry (contract ``MaterialLayers``): layer i is a cylindrical shell of mean radius
``r_cm[i]``, radial thickness ``dr_cm[i]`` (0 = thin), extending over
``z_min_cm[i] <= z <= z_max_cm[i]``, with thickness ``x_over_x0[i]`` at normal incidence,
effective atomic number ``z_eff[i]`` and azimuthal coverage ``phi_fraction[i]``. The photon
path is a straight ray from its production vertex (lab frame, cm).

* Thick layer (dr > 0): the ray is intersected exactly with the inner and outer cylinders and
  the z planes; the path length L inside the shell gives t = L x_over_x0/dr. A ray leaving the
  origin crosses one segment; a displaced ray can cross a shell twice (two segments).
* Thin layer (dr = 0): each crossing of the cylinder contributes t = x_over_x0/|cos alpha|,
  alpha the angle between the ray and the cylinder normal at the crossing (= 1/sin theta for
  a ray from the z axis); 1/|cos alpha| is capped at :data:`MAX_OBLIQUITY` for grazing rays.

Conversion probability of a segment: P = f (1 - exp(-(7/9) t R(E, Z))) (physics.md eq. 5.1 with
the energy dependence R of :mod:`isrsim.physics.conversion`), f = ``phi_fraction``: partial
azimuthal coverage is treated as an average (the photon meets the material with probability f).
Segments are taken in order along the path; the photon survives segment j with 1 - P_j. Inside
a thick segment the conversion point follows the truncated exponential exp(-lambda s),
lambda = (7/9) R x_over_x0/dr; in a thin layer it is the crossing point.
The pair: Bethe-Heitler energy sharing (5.2) and Urban's angles (5.3), :func:`sample_pair`.

Forced mode: for a photon, the probability to convert in the forced layers before any other
conversion is W = sum_{j forced} (prod_{i<j} (1 - P_i)) P_j. The conversion is placed in a forced
segment j with probability S_j P_j / W and the event weight is multiplied by n_sel W (n_sel
selected photons, one of which is chosen uniformly per event). The weighted forced sample
therefore estimates the expected number of conversions in the forced layers per event, i.e.
the natural rate of single conversions; events with two conversions (O(P^2) ~ 1e-4) are not
generated in forced mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._numba import kernel
from ..constants import M_E, PDG_GAMMA
from ..events import TruthChunk
from ..exceptions import ConfigError
from ..helix import momentum_at_perigee, perigee_from_state
from ..physics.conversion import SEVEN_NINTHS, pair_cross_section_ratio, sample_pair

__all__ = [
    "CONVERSION_EXTRA_FIELDS",
    "MAX_OBLIQUITY",
    "MODES",
    "convert_photons",
    "layer_path_segments",
    "material_arrays",
    "pair_mass_at_pca",
    "resolve_layers",
    "transport_photon",
]


def __dir__() -> list[str]:
    return __all__


#: Cap on 1/|cos alpha| for thin layers (grazing incidence).
MAX_OBLIQUITY = 100.0
#: Conversion modes of :func:`convert_photons`.
MODES = ("natural", "forced")
#: Event-level truth fields added by :func:`convert_photons` (float64):
#: number of conversions; layer index, transverse radius [cm] and e+ energy fraction of the
#: first conversion (-1 if none); the factor applied to the event weight (1 in natural mode).
CONVERSION_EXTRA_FIELDS = ("conv_n", "conv_layer", "conv_r_cm", "conv_x", "conv_weight")


# ---------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------
@kernel
def _disc_interval(a, bq, c):
    """Interval [s1, s2] of s where |V_xy + s u_xy|^2 <= R^2 (a s^2 + 2 bq s + c <= 0).
    Returns (s1, s2, ok)."""
    disc = bq * bq - a * c
    if a <= 0.0 or disc < 0.0:
        return 0.0, 0.0, False
    sq = math.sqrt(disc)
    # numerically stable roots
    if bq >= 0.0:
        q = -(bq + sq)
    else:
        q = -(bq - sq)
    if q == 0.0:
        return 0.0, 0.0, True
    s1 = q / a
    s2 = c / q
    if s1 > s2:
        s1, s2 = s2, s1
    return s1, s2, True


@kernel
def _add_segment(p0, p1, lam, layer, seg_s0, seg_s1, seg_t, seg_layer, nseg):
    """Append the path segment [p0, p1] through ``layer`` (t = path x lam) if non-empty;
    returns the new segment count."""
    if p1 > p0:
        seg_s0[nseg] = p0
        seg_s1[nseg] = p1
        seg_t[nseg] = (p1 - p0) * lam
        seg_layer[nseg] = layer
        nseg += 1
    return nseg


@kernel
def layer_path_segments(vx, vy, vz, ux, uy, uz, r_cm, dr_cm, z_min_cm, z_max_cm, x_over_x0,
                        seg_s0, seg_s1, seg_t, seg_layer):
    """Segments of the ray V + s u (s >= 0, |u| = 1) inside each material layer.

    Parameters
    ----------
    vx, vy, vz : float
        Production vertex [cm], lab frame.
    ux, uy, uz : float
        Unit direction of the photon.
    r_cm, dr_cm, z_min_cm, z_max_cm, x_over_x0 : ndarray
        Layer arrays (contract ``MaterialLayers``).
    seg_s0, seg_s1, seg_t : ndarray[float64], size >= 2 n_layers
        Output: entry and exit path length [cm] (equal for thin layers) and the thickness in
        X0 traversed in each segment.
    seg_layer : ndarray[int64], size >= 2 n_layers
        Output: layer index of each segment.

    Returns
    -------
    int
        Number of segments, sorted by entry distance.
    """
    a = ux * ux + uy * uy
    bq = vx * ux + vy * uy
    r0sq = vx * vx + vy * vy
    # z slab in s
    inv = 1.0 / uz if uz != 0.0 else 0.0
    nseg = 0
    for i in range(r_cm.shape[0]):
        if uz != 0.0:
            sz1 = (z_min_cm[i] - vz) * inv
            sz2 = (z_max_cm[i] - vz) * inv
            if sz1 > sz2:
                sz1, sz2 = sz2, sz1
        elif z_min_cm[i] <= vz <= z_max_cm[i]:
            sz1, sz2 = -1e300, 1e300
        else:
            continue
        lo_clip = max(sz1, 0.0)
        if dr_cm[i] > 0.0:
            r_out = r_cm[i] + 0.5 * dr_cm[i]
            r_in = max(r_cm[i] - 0.5 * dr_cm[i], 0.0)
            so1, so2, ok_o = _disc_interval(a, bq, r0sq - r_out * r_out)
            if not ok_o:
                continue
            si1, si2, ok_i = _disc_interval(a, bq, r0sq - r_in * r_in)
            lam = x_over_x0[i] / dr_cm[i]
            if ok_i and r_in > 0.0:
                # two pieces [so1, si1] and [si2, so2]
                for piece in range(2):
                    if piece == 0:
                        p0, p1 = so1, si1
                    else:
                        p0, p1 = si2, so2
                    nseg = _add_segment(max(p0, lo_clip), min(p1, sz2), lam, i,
                                        seg_s0, seg_s1, seg_t, seg_layer, nseg)
            else:
                nseg = _add_segment(max(so1, lo_clip), min(so2, sz2), lam, i,
                                    seg_s0, seg_s1, seg_t, seg_layer, nseg)
        else:
            rr = r_cm[i]
            s1, s2, ok = _disc_interval(a, bq, r0sq - rr * rr)
            if not ok or rr <= 0.0:
                continue
            for piece in range(2):
                sc = s1 if piece == 0 else s2
                if sc < lo_clip or sc > sz2:
                    continue
                if piece == 1 and s2 == s1:
                    continue
                xc = vx + sc * ux
                yc = vy + sc * uy
                cos_a = abs(xc * ux + yc * uy) / rr
                obl = MAX_OBLIQUITY if cos_a * MAX_OBLIQUITY < 1.0 else 1.0 / cos_a
                seg_s0[nseg] = sc
                seg_s1[nseg] = sc
                seg_t[nseg] = x_over_x0[i] * obl
                seg_layer[nseg] = i
                nseg += 1
    # insertion sort by entry distance
    for j in range(1, nseg):
        k = j
        while k > 0 and seg_s0[k - 1] > seg_s0[k]:
            seg_s0[k - 1], seg_s0[k] = seg_s0[k], seg_s0[k - 1]
            seg_s1[k - 1], seg_s1[k] = seg_s1[k], seg_s1[k - 1]
            seg_t[k - 1], seg_t[k] = seg_t[k], seg_t[k - 1]
            seg_layer[k - 1], seg_layer[k] = seg_layer[k], seg_layer[k - 1]
            k -= 1
    return nseg


@kernel
def _position_in_segment(rng, s0, s1, rate):
    """Path length of the conversion point in [s0, s1] for density exp(-rate s)."""
    length = s1 - s0
    if length <= 0.0:
        return s0
    y = rate * length
    r = rng.random()
    if y < 1e-12:
        return s0 + r * length
    return s0 - math.log1p(r * math.expm1(-y)) / rate


@kernel
def transport_photon(rng, vx, vy, vz, px, py, pz, e_gamma,
                     r_cm, dr_cm, z_min_cm, z_max_cm, x_over_x0, z_eff, phi_fraction,
                     forced, forced_mask, seg_s0, seg_s1, seg_t, seg_layer, seg_p):
    """Transport one photon through the layers; decide whether and where it converts.

    Parameters
    ----------
    rng : numpy.random.Generator
    vx, vy, vz : float
        Production vertex [cm] (lab).
    px, py, pz, e_gamma : float
        Lab momentum and energy [GeV] of the photon.
    r_cm, dr_cm, z_min_cm, z_max_cm, x_over_x0, z_eff, phi_fraction : ndarray
        Layer arrays (contract ``MaterialLayers``).
    forced : bool
        False: natural mode (convert with the physical probability). True: force the
        conversion in a layer with ``forced_mask[layer]`` true.
    forced_mask : ndarray[bool]
        Layers in which a forced conversion may be placed.
    seg_s0, seg_s1, seg_t, seg_p : ndarray[float64]; seg_layer : ndarray[int64]
        Work arrays of size >= 2 n_layers.

    Returns
    -------
    tuple
        (layer, x, y, z, weight): layer index of the conversion (-1: none) and the conversion
        point [cm]. ``weight`` is 1 in natural mode and W (the probability to convert in the
        forced layers, 0 if none is crossed) in forced mode.
    """
    p = math.sqrt(px * px + py * py + pz * pz)
    if p <= 0.0 or e_gamma <= 2.0 * M_E:
        return -1, vx, vy, vz, (0.0 if forced else 1.0)
    ux, uy, uz = px / p, py / p, pz / p
    nseg = layer_path_segments(vx, vy, vz, ux, uy, uz, r_cm, dr_cm, z_min_cm, z_max_cm,
                               x_over_x0, seg_s0, seg_s1, seg_t, seg_layer)
    if nseg == 0:
        return -1, vx, vy, vz, (0.0 if forced else 1.0)
    chosen = -1
    weight = 1.0
    if not forced:
        for j in range(nseg):
            li = seg_layer[j]
            pj = phi_fraction[li] * -math.expm1(
                -SEVEN_NINTHS * seg_t[j] * pair_cross_section_ratio(e_gamma, z_eff[li]))
            if rng.random() < pj:
                chosen = j
                break
    else:
        surv = 1.0
        total = 0.0
        for j in range(nseg):
            li = seg_layer[j]
            pj = phi_fraction[li] * -math.expm1(
                -SEVEN_NINTHS * seg_t[j] * pair_cross_section_ratio(e_gamma, z_eff[li]))
            if forced_mask[li]:
                seg_p[j] = surv * pj
                total += seg_p[j]
            else:
                seg_p[j] = 0.0
            surv *= 1.0 - pj
        weight = total
        if total <= 0.0:
            return -1, vx, vy, vz, 0.0
        r = rng.random() * total
        acc = 0.0
        for j in range(nseg):
            acc += seg_p[j]
            if seg_p[j] > 0.0:
                chosen = j
                if r < acc:
                    break
    if chosen < 0:
        return -1, vx, vy, vz, weight
    li = seg_layer[chosen]
    if seg_s1[chosen] > seg_s0[chosen]:
        rate = SEVEN_NINTHS * pair_cross_section_ratio(e_gamma, z_eff[li]) * x_over_x0[li] / dr_cm[li]
        s = _position_in_segment(rng, seg_s0[chosen], seg_s1[chosen], rate)
    else:
        s = seg_s0[chosen]
    return li, vx + s * ux, vy + s * uy, vz + s * uz, weight


@kernel
def pair_mass_at_pca(xp, yp, zp, pxp, pyp, pzp, xm, ym, zm, pxm, pym, pzm, bz):
    """Invariant mass [GeV] of an e+ e- pair from their momenta at the perigee (PCA to the z axis).

    Each lepton is propagated exactly along its helix (``isrsim.helix``) from its production
    point to the perigee w.r.t. the origin; the mass is then computed with the electron mass,
    as a reconstruction that assumes an IP vertex would (physics.md 5.4, eq. 5.3:
    M_PCA ~ 0.3 B R/sqrt(x(1 - x))). ``bz`` [T] > 0.
    """
    d0, phi0, om, z0, tl = perigee_from_state(xp, yp, zp, pxp, pyp, pzp, 1.0, bz)
    ax, ay, az = momentum_at_perigee(phi0, om, tl, bz)
    d0, phi0, om, z0, tl = perigee_from_state(xm, ym, zm, pxm, pym, pzm, -1.0, bz)
    bx, by, bzz = momentum_at_perigee(phi0, om, tl, bz)
    ea = math.sqrt(ax * ax + ay * ay + az * az + M_E * M_E)
    eb = math.sqrt(bx * bx + by * by + bzz * bzz + M_E * M_E)
    sx, sy, sz, se = ax + bx, ay + by, az + bzz, ea + eb
    m2 = se * se - sx * sx - sy * sy - sz * sz
    return math.sqrt(max(m2, 0.0))


# ---------------------------------------------------------------------------------------
# chunk-level conversion
# ---------------------------------------------------------------------------------------
@kernel
def _convert_chunk(rng, select, forced, forced_mask,
                   r_cm, dr_cm, z_min_cm, z_max_cm, x_over_x0, z_eff, phi_fraction,
                   npart, pdg, p4, vtx, parent, weight,
                   ex_n, ex_layer, ex_r, ex_x, ex_w):
    """Convert the selected photons of every event in place (arrays already widened)."""
    nl = r_cm.shape[0]
    seg_s0 = np.empty(2 * nl + 2)
    seg_s1 = np.empty(2 * nl + 2)
    seg_t = np.empty(2 * nl + 2)
    seg_p = np.empty(2 * nl + 2)
    seg_layer = np.empty(2 * nl + 2, np.int64)
    kmax = pdg.shape[1]
    idx = np.empty(kmax, np.int64)
    n_conv_total = 0
    for i in range(npart.shape[0]):
        ex_n[i] = 0.0
        ex_layer[i] = -1.0
        ex_r[i] = -1.0
        ex_x[i] = -1.0
        ex_w[i] = 1.0
        nsel = 0
        for j in range(npart[i]):
            if select[i, j] and pdg[i, j] == 22:
                idx[nsel] = j
                nsel += 1
        if forced:
            if nsel == 0:
                weight[i] = 0.0
                ex_w[i] = 0.0
                continue
            pick = int(rng.random() * nsel)
            if pick >= nsel:
                pick = nsel - 1
            first = pick
            last = pick + 1
        else:
            first = 0
            last = nsel
        for q in range(first, last):
            j = idx[q]
            layer, xc, yc, zc, w = transport_photon(
                rng, vtx[i, j, 0], vtx[i, j, 1], vtx[i, j, 2],
                p4[i, j, 0], p4[i, j, 1], p4[i, j, 2], p4[i, j, 3],
                r_cm, dr_cm, z_min_cm, z_max_cm, x_over_x0, z_eff, phi_fraction,
                forced, forced_mask, seg_s0, seg_s1, seg_t, seg_layer, seg_p)
            if forced:
                f = nsel * w
                weight[i] *= f
                ex_w[i] = f
            if layer < 0:
                continue
            slot = npart[i]
            x, u, pxp, pyp, pzp, ep, pxm, pym, pzm, em = sample_pair(
                rng, p4[i, j, 0], p4[i, j, 1], p4[i, j, 2], p4[i, j, 3])
            pdg[i, slot] = -11
            pdg[i, slot + 1] = 11
            p4[i, slot, 0], p4[i, slot, 1], p4[i, slot, 2], p4[i, slot, 3] = pxp, pyp, pzp, ep
            p4[i, slot + 1, 0], p4[i, slot + 1, 1], p4[i, slot + 1, 2] = pxm, pym, pzm
            p4[i, slot + 1, 3] = em
            for d in range(2):
                vtx[i, slot + d, 0] = xc
                vtx[i, slot + d, 1] = yc
                vtx[i, slot + d, 2] = zc
                parent[i, slot + d] = j
            npart[i] = slot + 2
            if ex_n[i] == 0.0:
                ex_layer[i] = layer
                ex_r[i] = math.sqrt(xc * xc + yc * yc)
                ex_x[i] = x
            ex_n[i] += 1.0
            n_conv_total += 1
    return n_conv_total


def material_arrays(material: Any) -> tuple[np.ndarray, ...]:
    """Validated contiguous float64 layer arrays (r_cm, dr_cm, z_min_cm, z_max_cm, x_over_x0,
    z_eff, phi_fraction) of a ``MaterialLayers``-like object, in the order the kernels take them;
    ConfigError naming the first invalid entry."""
    names = ("r_cm", "dr_cm", "z_min_cm", "z_max_cm", "x_over_x0", "z_eff", "phi_fraction")
    try:
        arrays = tuple(np.ascontiguousarray(getattr(material, nm), dtype=np.float64) for nm in names)
    except AttributeError as exc:
        msg = f"material must provide the MaterialLayers arrays {names}: {exc}"
        raise ConfigError(msg) from None
    n = arrays[0].shape[0]
    for nm, arr in zip(names, arrays):
        if arr.ndim != 1 or arr.shape[0] != n:
            msg = f"material.{nm} has shape {arr.shape}, expected ({n},)"
            raise ConfigError(msg)
        if not np.all(np.isfinite(arr)):
            msg = f"material.{nm} contains non-finite values"
            raise ConfigError(msg)
    r, dr, zmin, zmax, xx0, zeff, fphi = arrays
    checks = (
        ("r_cm", r > 0, "> 0"), ("dr_cm", dr >= 0, ">= 0"), ("dr_cm", dr <= 2 * r, "<= 2 r_cm"),
        ("z_max_cm", zmax > zmin, "> z_min_cm"), ("x_over_x0", xx0 >= 0, ">= 0"),
        ("z_eff", zeff >= 1, ">= 1"), ("phi_fraction", (fphi >= 0) & (fphi <= 1), "in [0, 1]"),
    )
    for nm, ok, allowed in checks:
        if not np.all(ok):
            bad = int(np.flatnonzero(~ok)[0])
            arr = dict(zip(names, arrays))[nm]
            msg = f"material.{nm}[{bad}] = {arr[bad]!r} is invalid: allowed {allowed}"
            raise ConfigError(msg)
    return arrays


def resolve_layers(material: Any, layers: Sequence[str | int] | str | None, *,
                   field: str = "conversion_layers") -> np.ndarray:
    """Boolean mask over ``material``'s layers from names or indices (``None``: all layers).

    Names match ``material.names`` exactly or as a case-insensitive prefix
    (``"beam pipe"`` selects every layer whose name starts with it). ``field`` names the
    option in the error messages.
    """
    n = int(np.asarray(material.r_cm).shape[0])
    names = tuple(getattr(material, "names", ()))
    mask = np.zeros(n, dtype=np.bool_)
    if layers is None:
        mask[:] = True
        return mask
    if isinstance(layers, (str, int)):
        layers = [layers]
    for item in layers:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= int(item) < n:
                msg = f"{field} entry {item!r} out of range: allowed 0 <= index < {n}"
                raise ConfigError(msg)
            mask[int(item)] = True
            continue
        if not isinstance(item, str):
            msg = f"{field} entry {item!r} must be a layer name or index"
            raise ConfigError(msg)
        hits = [i for i, nm in enumerate(names) if nm == item]
        if not hits:
            hits = [i for i, nm in enumerate(names) if nm.lower().startswith(item.lower())]
        if not hits:
            msg = f"{field} entry {item!r} matches no layer: allowed {list(names)}"
            raise ConfigError(msg)
        mask[hits] = True
    if not mask.any():
        msg = f"{field} selects no layer"
        raise ConfigError(msg)
    return mask


def _final_state_photons(truth: TruthChunk) -> np.ndarray:
    """[n, k] mask of photons (pdg 22) that are nobody's parent."""
    n, k = truth.pdg.shape
    valid = np.arange(k)[None, :] < truth.npart[:, None]
    is_parent = np.zeros((n, k), dtype=np.bool_)
    rows, cols = np.nonzero(valid & (truth.parent >= 0))
    is_parent[rows, truth.parent[rows, cols]] = True
    return valid & (truth.pdg == PDG_GAMMA) & ~is_parent


def convert_photons(truth: TruthChunk, material: Any, rng: np.random.Generator, *,
                    mode: str = "natural", forced_layers: Sequence[str | int] | None = None,
                    photons: str | np.ndarray = "all", k_out: int | None = None) -> TruthChunk:
    """Transport photons of ``truth`` through ``material`` and append their conversion pairs.

    Parameters
    ----------
    truth : TruthChunk
        Lab-frame events. Not modified.
    material : MaterialLayers or DetectorModel
        Cylindrical layers (a ``DetectorModel`` is replaced by its ``material``), or any
        object with the same arrays.
    rng : numpy.random.Generator
    mode : {"natural", "forced"}
        Natural: every selected photon converts with its physical probability (any layer).
        Forced: one selected photon per event (uniformly chosen) is converted in one of
        ``forced_layers`` and the event weight is multiplied by n_sel W (module docstring);
        events whose chosen photon crosses no forced layer get weight 0.
    forced_layers : sequence of str or int, optional
        Layer names (exact or case-insensitive prefix) or indices; default all layers.
        Only used in forced mode.
    photons : "all", int array [n] or bool array [n, k]
        Which photons are transported: "all" final-state photons (pdg 22 without children);
        an int array of one truth index per event (-1: none); or a boolean mask.
    k_out : int, optional
        Particle slots of the output chunk; default ``truth.k + 2 m``, with m = 1 (forced) or
        the largest number of selected photons in an event (natural). Must be large enough.

    Returns
    -------
    TruthChunk
        Copy of ``truth`` with ``k_out`` slots, e+ (pdg -11) and e- (11) appended after the
        existing particles for each conversion (``parent`` = photon index, ``vtx`` =
        conversion point), weights multiplied in forced mode, and the event-level fields
        :data:`CONVERSION_EXTRA_FIELDS` added to ``extra``. The converted photon stays in
        the list as the parent of the pair: the detector must not make a cluster of a
        photon that has children.
    """
    if mode not in MODES:
        msg = f"conversion mode = {mode!r} is unknown: allowed {', '.join(MODES)}"
        raise ConfigError(msg)
    if not isinstance(rng, np.random.Generator):
        msg = f"rng must be a numpy.random.Generator, got {type(rng).__name__}"
        raise ConfigError(msg)
    if not hasattr(material, "r_cm") and hasattr(material, "material"):
        material = material.material
    arrays = material_arrays(material)
    forced = mode == "forced"
    fmask = resolve_layers(material, forced_layers if forced else None)

    n, k = truth.pdg.shape
    base = _final_state_photons(truth)
    if isinstance(photons, str):
        if photons != "all":
            msg = f"photons = {photons!r} is invalid: allowed 'all', an index array [n] or a mask [n, k]"
            raise ConfigError(msg)
        select = base
    else:
        sel = np.asarray(photons)
        if sel.dtype == np.bool_ and sel.shape == (n, k):
            select = sel & base
        elif sel.ndim == 1 and sel.shape[0] == n and np.issubdtype(sel.dtype, np.integer):
            if np.any((sel < -1) | (sel >= k)):
                msg = f"photons index array has entries outside [-1, {k - 1}]"
                raise ConfigError(msg)
            select = np.zeros((n, k), dtype=np.bool_)
            rows = np.flatnonzero(sel >= 0)
            select[rows, sel[rows]] = True
            select &= base
        else:
            msg = (f"photons has dtype {sel.dtype} and shape {sel.shape}: allowed 'all', an int "
                   f"array of shape ({n},) or a bool array of shape ({n}, {k})")
            raise ConfigError(msg)
    nsel_max = int(select.sum(axis=1).max()) if n else 0
    need = k + 2 * (1 if forced else nsel_max)
    if k_out is None:
        k_out = need
    elif int(k_out) < need:
        msg = f"k_out = {k_out!r} is too small: need >= {need} (k = {k} plus 2 per conversion)"
        raise ConfigError(msg)
    k_out = int(k_out)
    max_fill = int(truth.npart.max()) if n else 0
    if n and max_fill + 2 * (1 if forced else nsel_max) > k_out:
        msg = f"k_out = {k_out} cannot hold {max_fill} particles plus the conversion pairs"
        raise ConfigError(msg)

    pad = k_out - k
    out = TruthChunk(
        npart=truth.npart.astype(np.int16, copy=True),
        pdg=np.pad(truth.pdg, ((0, 0), (0, pad))),
        p4=np.pad(truth.p4, ((0, 0), (0, pad), (0, 0))),
        vtx=np.pad(truth.vtx, ((0, 0), (0, pad), (0, 0))),
        parent=np.pad(truth.parent, ((0, 0), (0, pad)), constant_values=-1),
        weight=truth.weight.astype(np.float64, copy=True),
        extra={key: v.copy() for key, v in truth.extra.items()},
    )
    select_out = np.pad(select, ((0, 0), (0, pad)))
    for name in CONVERSION_EXTRA_FIELDS:
        out.extra[name] = np.zeros(n)
    ex = out.extra
    _convert_chunk(rng, select_out, forced, fmask, *arrays,
                   out.npart, out.pdg, out.p4, out.vtx, out.parent, out.weight,
                   ex["conv_n"], ex["conv_layer"], ex["conv_r_cm"], ex["conv_x"], ex["conv_weight"])
    return out
