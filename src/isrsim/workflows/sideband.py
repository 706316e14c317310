"""``isrsim sideband``: the X17 2D sideband in (r_xy, Delta M) at Belle II (issue 8 item 3).

Samples (generated in memory, simulated with the detector, reconstructed with the
``belle2_lowmass`` selection including the two-track helix vertex fit):

* **signal** e+e- -> gamma A', A' -> e+e- at ``mass`` (default 17 MeV) for each eps in
  ``epsilon`` (:class:`isrsim.processes.darkphoton.DarkPhoton`, unweighted, displaced decays
  with the physical c tau of physics.md 6.3; photon generated in the CM band that covers the
  lab acceptance ``theta_lab_deg``);
* **conversion background** e+e- -> gamma gamma with one photon converted, forced in
  ``conversion_layers`` (default beam pipe + PXD) and the generator-level M_PCA preselection
  (:class:`isrsim.processes.diphoton.DiPhoton`, weighted; physics.md 4 and 5), two independent
  samples: one to design the regions ("optimisation"), one to check the prediction ("closure").

Variables: r_xy of the fitted vertex, Delta M = M_after - M_before (vertex-fit mass shift,
physics.md 5.4: ~ -0.2998 B R/sqrt(x(1-x)) for conversions, ~0 for the A'), both only for
candidates with the fitted pair mass m_ll in the window |m_ll - mass| < ``window``.

Regions (all inside the mass window):

* signal region SR: r_xy < r_sr and Delta M > -dm_sr;
* sideband SB: Delta M < -dm_sb and r_xy > r_sb (dm_sb >= dm_sr), the conversion band.

Prediction: B_SR = T N_SB with the transfer factor T = B_SR^MC / B_SB^MC of the optimisation
sample. Uncertainty: Poisson of N_SB at the luminosity, MC statistics of T (sum w^2), and a
shape systematic = quadrature sum over sources of the largest relative change of T when
(i) the conversion rate of each layer group (beam pipe, PXD) is scaled by 1 +- ``syst_material``
(material budget), (ii) Delta M is scaled by 1 +- ``syst_dm_scale`` (field / momentum scale,
vertex-fit mass shift), (iii) r_xy is scaled by 1 +- ``syst_r_scale`` (vertex-position scale).

Optimiser: a grid over (window, r_sr, dm_sr, dm_sb, r_sb) maximising the Asimov discovery
significance with a background uncertainty (Cowan, Cranmer, Gross, Vitells, arXiv:1007.1727;
the sigma_b form of Cowan's "Discovery sensitivity for a counting experiment with background
uncertainty") for the signal at ``optimise_epsilon`` and the first luminosity, subject to:
signal contamination S_SB/B_SB <= ``max_contamination`` for every eps, and at least
``min_mc_events`` background MC events of non-zero weight in SR and SB (the transfer factor
must be measured).

Closure: the prediction T N_SB(closure sample) against the closure sample's own B_SR, pull =
(pred - true)/sqrt(sigma_pred^2 + sigma_true^2) with the MC statistical uncertainties only (T's,
and both samples' in SB and SR): the two samples share the nominal material and scales, so the
shape systematic cannot show between them.

Outputs in ``--output`` (default ``sideband_<detector>``, e.g. ``sideband_belle2``):
``sideband_summary.json``, ``sideband_regions.csv`` (yields per region and sample),
``sideband_grid.csv`` (every valid grid point), ``sideband_2d.png``, ``sideband_projections.png``,
``sideband_optimisation.png``.
"""

from __future__ import annotations

import json
import math
import os
import time
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ConfigError, OutputError
from ..physics.darkphoton import EPSILON_ALLOWED, EPSILON_MIN

__all__ = ["DEFAULTS", "Regions", "asimov_significance", "load_config", "main",
           "predict_background", "projected_epsilon_limit", "region_yields"]

DEFAULTS: dict[str, Any] = {
    "detector": "belle2",
    "luminosity": "314/fb",
    "seed": 1,
    "mass": 0.017,
    "epsilon": [6.8e-4, 1e-3, 1.4e-3],
    "optimise_epsilon": 1e-3,
    "signal_events": 20_000,
    "background_events": 400_000,
    "theta_lab_deg": [17.0, 150.0],
    "conversion_layers": ["beam pipe", "PXD"],
    "layer_groups": ["beam pipe", "PXD"],
    "m_pca_max": 0.060,
    "vertex_twin": "min_chi2",
    "max_contamination": 0.10,
    "min_mc_events": 10,
    "grid_window": [0.001, 0.0015, 0.002, 0.003, 0.004, 0.006],
    "grid_r_sr": [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0],
    "grid_dm_sr": [0.0005, 0.001, 0.002, 0.003, 0.004, 0.006, 0.008],
    "grid_dm_sb": [0.002, 0.004, 0.006, 0.008, 0.010, 0.015],
    "grid_r_sb": [0.0, 0.3, 0.6, 0.9],
    "syst_material": 0.20,
    "syst_dm_scale": 0.05,
    "syst_r_scale": 0.05,
    "cl": 0.90,
    "convention": "qtilde_asymptotic",
}


# ---------------------------------------------------------------------------------------
# configuration


def load_config(args: Any) -> dict[str, Any]:
    """Defaults < card (``--card``, default bundled ``sideband_belle2_x17``) < flags.

    ``--mass`` takes one value, ``--epsilon`` a list, ``--events`` sets the background MC
    events per sample, ``--luminosity`` may be a comma list (regions optimised at the first).
    """
    from ..stats import CONVENTIONS
    from ._common import (
        check_choice,
        check_float,
        check_int,
        check_number_list,
        check_output_dir,
        merge_workflow_card,
        parse_luminosities,
    )

    cfg = merge_workflow_card(args, DEFAULTS, "sideband_belle2_x17", "sideband", (
        ("detector", "detector"), ("luminosity", "luminosity"), ("epsilon", "epsilon"),
        ("seed", "seed"), ("events", "background_events"), ("output", "output")))
    m = getattr(args, "mass", None)
    if m is not None:
        if len(m) != 1:
            msg = f"--mass = {m!r} is invalid: allowed exactly one A' mass [GeV]"
            raise ConfigError(msg)
        cfg["mass"] = m[0]
    if not isinstance(cfg["detector"], str) or not cfg["detector"].strip():
        msg = f"detector = {cfg['detector']!r} is invalid: allowed a bundled detector name or a .toml path"
        raise ConfigError(msg)
    cfg["luminosities_invnb"] = parse_luminosities(cfg["luminosity"])
    cfg["luminosity_labels"] = ([x.strip() for x in cfg["luminosity"].split(",") if x.strip()]
                                if isinstance(cfg["luminosity"], str) else
                                [str(x) for x in np.atleast_1d(cfg["luminosity"])])
    eps = cfg["epsilon"]
    eps = [eps] if isinstance(eps, (int, float)) and not isinstance(eps, bool) else eps
    cfg["epsilon"] = sorted(check_number_list("epsilon", eps, lo=EPSILON_MIN, hi=1.0, hi_open=True,
                                              what=f"couplings ({EPSILON_ALLOWED})"))
    cfg["optimise_epsilon"] = check_float("optimise_epsilon", cfg["optimise_epsilon"], lo=EPSILON_MIN,
                                          hi=1.0, hi_open=True, allowed=EPSILON_ALLOWED)
    cfg["mass"] = check_float("mass", cfg["mass"], lo=0.0011, hi=0.2, lo_open=True, hi_open=True,
                              allowed="0.0011 < mass < 0.2 GeV (e+e- below the mu mu threshold)")
    cfg["seed"] = check_int("seed", cfg["seed"], 0, 2**63 - 1)
    for k in ("signal_events", "background_events"):
        cfg[k] = check_int(k, cfg[k], 1000, 10**10)
    theta = check_number_list("theta_lab_deg", cfg["theta_lab_deg"], lo=0.0, hi=180.0,
                              what="angles [deg]: [MIN, MAX] with 0 <= MIN < MAX <= 180")
    if len(theta) != 2 or not theta[0] < theta[1]:
        msg = (f"theta_lab_deg = {cfg['theta_lab_deg']!r} is invalid: allowed [MIN, MAX] with "
               "0 <= MIN < MAX <= 180 [deg]")
        raise ConfigError(msg)
    cfg["theta_lab_deg"] = theta
    for k in ("conversion_layers", "layer_groups"):
        v = cfg[k]
        if not isinstance(v, list) or not v or not all(isinstance(x, (str, int)) and not isinstance(x, bool)
                                                        for x in v):
            msg = f"{k} = {v!r} is invalid: allowed a non-empty list of material layer names"
            raise ConfigError(msg)
    cfg["m_pca_max"] = check_float("m_pca_max", cfg["m_pca_max"], lo=0.0, lo_open=True, hi=10.0)
    from ..reco.vertexfit import check_twin

    check_twin(cfg["vertex_twin"], "vertex_twin")
    cfg["max_contamination"] = check_float("max_contamination", cfg["max_contamination"], lo=0.0,
                                           hi=1.0, lo_open=True, hi_open=True,
                                           allowed="0 < value < 1")
    cfg["min_mc_events"] = check_int("min_mc_events", cfg["min_mc_events"], 0, 10**10)
    for k in ("grid_window", "grid_r_sr", "grid_dm_sr", "grid_dm_sb", "grid_r_sb"):
        v = cfg[k]
        v = [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v
        cfg[k] = check_number_list(k, v, lo=0.0, what="numbers >= 0")
    for k in ("syst_material", "syst_dm_scale", "syst_r_scale"):
        cfg[k] = check_float(k, cfg[k], lo=0.0, hi=1.0, hi_open=True, allowed="0 <= value < 1")
    cfg["cl"] = check_float("cl", cfg["cl"], lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    check_choice("convention", cfg["convention"], CONVENTIONS)
    cfg["quiet"] = bool(getattr(args, "quiet", False))
    if cfg.get("output") is None:
        cfg["output"] = f"sideband_{cfg['detector']}"
    check_output_dir(cfg["output"])
    return cfg


def _check_processes(cfg: dict[str, Any], det: Any) -> None:
    """Build the signal (every epsilon) and conversion-background processes with the detector
    before any sample is generated."""
    from ..processes import make_process

    try:
        for eps in cfg["epsilon"]:
            make_process("darkphoton", det.beam, mass=cfg["mass"], epsilon=eps, decay="ee",
                         photon_cut=_photon_cut(det, cfg["theta_lab_deg"]))
        make_process("diphoton", det.beam, theta_lab_deg=cfg["theta_lab_deg"], conversion="forced",
                     conversion_layers=cfg["conversion_layers"], detector=det, m_pca_max=cfg["m_pca_max"])
    except ConfigError as exc:
        msg = f"sideband card: {exc}"
        raise ConfigError(msg) from None


# ---------------------------------------------------------------------------------------
# samples


def _photon_cut(det: Any, theta_lab_deg: list[float]) -> dict[str, Any]:
    """CM photon-angle band covering the lab acceptance (signal generation)."""
    from ..processes.diphoton import cms_band_for_lab_window

    c_lo, c_hi = cms_band_for_lab_window(det.beam, math.radians(theta_lab_deg[0]),
                                         math.radians(theta_lab_deg[1]))
    return {"mode": "tagged", "theta_min": math.acos(min(c_hi, 1.0)),
            "theta_max": math.acos(max(c_lo, -1.0))}


def _cuts(cfg: dict[str, Any]) -> Any:
    from ..reco.selection import Belle2LowMassCuts

    return Belle2LowMassCuts(vertex_twin=cfg["vertex_twin"])


def _say(cfg: dict[str, Any], text: str) -> None:
    from ._common import progress

    progress(cfg, "sideband", text)


def _signal_sample(cfg: dict[str, Any], det: Any, eps: float) -> dict[str, np.ndarray]:
    from ..processes import make_process
    from .inject import candidates_in_memory

    proc = make_process("darkphoton", det.beam, mass=cfg["mass"], epsilon=eps, decay="ee",
                        photon_cut=_photon_cut(det, cfg["theta_lab_deg"]))
    _say(cfg, f"signal eps = {eps:g}: generating, simulating and reconstructing "
              f"{cfg['signal_events']} events")
    cols, info = candidates_in_memory(proc, det, cfg["signal_events"], seed=cfg["seed"],
                                      label=f"sideband-sig-{cfg['mass']:.6f}-{eps:.4e}",
                                      selection="belle2_lowmass", cuts=_cuts(cfg))
    cols["cross_section_nb"] = np.array(info["cross_section_nb"])
    _say(cfg, f"signal eps = {eps:g}: {cols['m_ll'].size} candidates ({info['seconds']:.1f} s)")
    return cols


def _background_sample(cfg: dict[str, Any], det: Any, which: str) -> dict[str, np.ndarray]:
    from ..processes import make_process
    from .inject import candidates_in_memory

    proc = make_process("diphoton", det.beam, theta_lab_deg=cfg["theta_lab_deg"],
                        conversion="forced", conversion_layers=cfg["conversion_layers"],
                        detector=det, m_pca_max=cfg["m_pca_max"])
    _say(cfg, f"conversion background ({which} sample): generating, simulating and "
              f"reconstructing {cfg['background_events']} events")
    cols, info = candidates_in_memory(proc, det, cfg["background_events"], seed=cfg["seed"],
                                      label=f"sideband-bkg-{which}", selection="belle2_lowmass",
                                      weighted=True, truth_extra=("conv_layer",),
                                      cuts=_cuts(cfg))
    cols["cross_section_nb"] = np.array(info["cross_section_nb"])
    _say(cfg, f"conversion background ({which} sample): {cols['m_ll'].size} candidates "
              f"({info['seconds']:.1f} s)")
    return cols


def _layer_group(det: Any, layer: np.ndarray, groups: list[str]) -> np.ndarray:
    """Index of the layer group (name prefix, case-insensitive) of each conversion layer; -1 other."""
    names = [n.lower() for n in det.material.names]
    lut = np.full(len(names), -1, np.int64)
    for gi, g in enumerate(groups):
        for li, n in enumerate(names):
            if n.startswith(g.lower()) and lut[li] < 0:
                lut[li] = gi
    idx = np.asarray(layer, dtype=np.int64)
    return np.where(idx >= 0, lut[np.clip(idx, 0, len(names) - 1)], -1)


# ---------------------------------------------------------------------------------------
# regions and statistics


class Regions:
    """Signal region and sideband boundaries (GeV, cm); see the module docstring."""

    def __init__(self, window: float, r_sr: float, dm_sr: float, dm_sb: float, r_sb: float) -> None:
        self.window, self.r_sr, self.dm_sr, self.dm_sb, self.r_sb = (
            float(window), float(r_sr), float(dm_sr), float(dm_sb), float(r_sb))

    def masks(self, cols: dict[str, np.ndarray], mass: float, *, dm_scale: float = 1.0,
              r_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Boolean (SR, SB) masks of the candidates (optionally with scaled Delta M / r_xy)."""
        inwin = np.abs(cols["m_ll"] - mass) < self.window
        dm = cols["delta_m"] * dm_scale
        r = cols["r_xy_cm"] * r_scale
        sr = inwin & (r < self.r_sr) & (dm > -self.dm_sr)
        sb = inwin & (dm < -self.dm_sb) & (r > self.r_sb)
        return sr, sb

    def as_dict(self) -> dict[str, float]:
        return {"window_GeV": self.window, "r_sr_cm": self.r_sr, "dm_sr_GeV": self.dm_sr,
                "dm_sb_GeV": self.dm_sb, "r_sb_cm": self.r_sb}


def asimov_significance(s: np.ndarray | float, b: np.ndarray | float,
                        sigma_b: np.ndarray | float) -> np.ndarray:
    """Median discovery significance for s signal over b +- sigma_b background events.

    Z_A = sqrt(2 [(s+b) ln((s+b)(b+sb2)/(b^2+(s+b) sb2)) - (b^2/sb2) ln(1 + sb2 s/(b (b+sb2)))])
    with sb2 = sigma_b^2 (Asimov profile likelihood, arXiv:1007.1727); sigma_b -> 0 gives
    sqrt(2 ((s+b) ln(1+s/b) - s)).
    """
    s = np.asarray(s, dtype=float)
    b = np.asarray(b, dtype=float)
    sb2 = np.asarray(sigma_b, dtype=float) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        z0 = 2.0 * ((s + b) * np.log1p(s / b) - s)
        t1 = (s + b) * np.log((s + b) * (b + sb2) / (b * b + (s + b) * sb2))
        t2 = b * b / sb2 * np.log1p(sb2 * s / (b * (b + sb2)))
        z = np.where(sb2 > 0, 2.0 * (t1 - t2), z0)
    return np.sqrt(np.clip(np.nan_to_num(z, nan=0.0), 0.0, None))


def region_yields(bkg: dict[str, np.ndarray], sigs: dict[float, dict[str, np.ndarray]],
                  reg: Regions, cfg: dict[str, Any], lumi: float, groups: np.ndarray) -> dict[str, Any]:
    """Expected yields in SR and SB at ``lumi`` [nb^-1], the transfer factor and its errors."""
    mass = cfg["mass"]
    w = bkg["xs_weight_nb"] * lumi
    sr, sb = reg.masks(bkg, mass)
    b_sr, b_sb = float(w[sr].sum()), float(w[sb].sum())
    e_sr, e_sb = math.sqrt(float((w[sr] ** 2).sum())), math.sqrt(float((w[sb] ** 2).sum()))
    # MC events that measure the transfer factor: the weighted diphoton sample holds candidates
    # of weight 0 (trials failing the generator-level M_PCA preselection or acceptance, kept so
    # that the sample is normalised per trial); they carry no information about T and must not
    # count toward min_mc_events
    live = w > 0
    out: dict[str, Any] = {"b_sr": b_sr, "b_sr_mc_err": e_sr, "b_sb": b_sb, "b_sb_mc_err": e_sb,
                           "n_mc_sr": int((sr & live).sum()), "n_mc_sb": int((sb & live).sum())}
    t = b_sr / b_sb if b_sb > 0 else float("nan")
    out["transfer"] = t
    out["transfer_mc_rel"] = math.hypot(e_sr / b_sr, e_sb / b_sb) if b_sr > 0 and b_sb > 0 else float("inf")
    # shape systematic: largest relative change of T per source, in quadrature
    sources = {}
    if b_sr > 0 and b_sb > 0:
        dev = 0.0
        for g in np.unique(groups[groups >= 0]):
            for sgn in (1.0, -1.0):
                ww = w * np.where(groups == g, 1.0 + sgn * cfg["syst_material"], 1.0)
                tv = ww[sr].sum() / ww[sb].sum()
                dev = max(dev, abs(tv / t - 1.0))
        sources["material"] = dev
        for name, key in (("dm_scale", "syst_dm_scale"), ("r_scale", "syst_r_scale")):
            dev = 0.0
            for sgn in (1.0, -1.0):
                kw = {name: 1.0 + sgn * cfg[key]}
                srv, sbv = reg.masks(bkg, mass, **kw)
                bsb = w[sbv].sum()
                if bsb > 0:
                    dev = max(dev, abs(w[srv].sum() / bsb / t - 1.0))
                else:
                    dev = float("inf")
            sources[name] = dev
    out["transfer_syst_sources"] = sources
    out["transfer_syst_rel"] = math.sqrt(sum(v * v for v in sources.values())) if sources else float("inf")
    s_sr, s_sb = {}, {}
    for eps, sc in sigs.items():
        ws = sc["xs_weight_nb"] * lumi
        ssr, ssb = reg.masks(sc, mass)
        s_sr[eps] = float(ws[ssr].sum())
        s_sb[eps] = float(ws[ssb].sum())
    out["s_sr"] = s_sr
    out["s_sb"] = s_sb
    out["contamination"] = {e: (s_sb[e] / b_sb if b_sb > 0 else float("inf")) for e in s_sb}
    return out


def predict_background(transfer: float, transfer_mc_rel: float, transfer_syst_rel: float,
                       n_sb: float, n_sb_err: float | None = None) -> dict[str, float]:
    """B_SR = T N_SB with its uncertainty components.

    ``n_sb_err`` is the uncertainty of N_SB (default sqrt(N_SB): Poisson of the sideband in
    data at the luminosity); ``stat`` combines it with the MC statistics of T.
    """
    pred = transfer * n_sb
    e_sb = math.sqrt(max(n_sb, 0.0)) if n_sb_err is None else n_sb_err
    rel_sb = e_sb / n_sb if n_sb > 0 else float("inf")
    stat = pred * math.hypot(rel_sb, transfer_mc_rel)
    syst = pred * transfer_syst_rel
    return {"prediction": pred, "stat": stat, "sideband_stat": pred * rel_sb,
            "transfer_mc_stat": pred * transfer_mc_rel, "shape_syst": syst,
            "total": math.hypot(stat, syst)}


def _optimise(bkg, sigs, cfg, groups) -> tuple[Regions | None, list[dict[str, Any]]]:
    lumi = cfg["luminosities_invnb"][0]
    e_opt = min(cfg["epsilon"], key=lambda e: abs(math.log(e / cfg["optimise_epsilon"])))
    rows = []
    best, best_z = None, -1.0
    for win, r_sr, dm_sr, dm_sb, r_sb in product(cfg["grid_window"], cfg["grid_r_sr"], cfg["grid_dm_sr"],
                                                 cfg["grid_dm_sb"], cfg["grid_r_sb"]):
        if dm_sb < dm_sr:
            continue
        reg = Regions(win, r_sr, dm_sr, dm_sb, r_sb)
        y = region_yields(bkg, sigs, reg, cfg, lumi, groups)
        if y["n_mc_sr"] < cfg["min_mc_events"] or y["n_mc_sb"] < cfg["min_mc_events"]:
            continue
        cont = max(y["contamination"].values())
        if cont > cfg["max_contamination"]:
            continue
        p = predict_background(y["transfer"], y["transfer_mc_rel"], y["transfer_syst_rel"], y["b_sb"])
        s = y["s_sr"][e_opt]
        z = float(asimov_significance(s, p["prediction"], p["total"]))
        rows.append({**reg.as_dict(), "s_sr": s, "b_sr": y["b_sr"], "b_pred_err": p["total"],
                     "contamination_max": cont, "z_asimov": z})
        if z > best_z:
            best, best_z = reg, z
    return best, rows


#: Signal-region background [events] below which the asymptotic counting limit is flagged.
SMALL_BACKGROUND = 10.0


def projected_epsilon_limit(s_sr_per_eps: dict[float, float], b_pred: float, *,
                            b_err: float = 0.0, convention: str = "qtilde_asymptotic",
                            cl: float = 0.90) -> dict[str, float]:
    """Median expected eps upper limit of a counting experiment in the SR.

    Statistical only: the observation is the Asimov background-only count n = B with B known
    exactly (:func:`isrsim.stats.counting_upper_limit`), giving S_up. With the background
    uncertainty ``b_err`` the yield limit is S_up sqrt(1 + b_err^2/B): the asymptotic Asimov
    limit for a Gaussian-constrained background (exact in the large-B regime, where
    S_up -> z_CL sqrt(B + b_err^2); arXiv:1007.1727). Each S_up is converted to eps by solving
    S_SR(eps) = S_up with S_SR(eps) = eps^2 k(eps), k = S_SR(eps_i)/eps_i^2 interpolated
    log-linearly between the simulated eps_i (the efficiency depends on eps through the decay
    length) and clamped outside them. With B < 10 (:data:`SMALL_BACKGROUND`) the asymptotic
    S_up under-covers and is too small (0.82 instead of 2.30 events for B -> 0;
    :mod:`isrsim.stats.limits`, "Validity"): for the q~_mu and CLs conventions S_up is then the
    exact limit of the median count, :func:`isrsim.stats.counting_exact_upper_limit` at
    n = median of Poisson(B) (the limit rises with n, so this is the median expected limit),
    and the result carries a ``note`` saying so; for ``rolke_chi2`` it stays asymptotic, with a
    ``note``.
    """
    from scipy import stats

    from ..stats import counting_exact_upper_limit, counting_upper_limit

    b = max(float(b_pred), 1e-9)
    ul = ul_asym = counting_upper_limit(b, b, convention=convention, cl=cl).upper_limit
    exact = {"qtilde_asymptotic": "qtilde_toys", "cls_asymptotic": "cls_toys"}.get(convention)
    note = None
    if b < SMALL_BACKGROUND:
        if exact is None:
            note = (f"background {b:.3g} < {SMALL_BACKGROUND:g} events: the asymptotic "
                    f"{convention} limit is approximate here; qtilde_asymptotic and "
                    "cls_asymptotic use the exact counting limit")
        else:
            n_med = int(stats.poisson.median(b))
            ul = counting_exact_upper_limit(n_med, b, method=exact, cl=cl)
            note = (f"background {b:.3g} < {SMALL_BACKGROUND:g} events: S_up = {ul:.3g} is the "
                    f"exact {'CLs' if exact == 'cls_toys' else 'Neyman q~_mu'} limit of the median "
                    f"count n = {n_med} (the asymptotic one, {ul_asym:.3g}, under-covers here)")
    ul_unc = ul * math.sqrt(1.0 + b_err**2 / b)
    eps = np.array(sorted(s_sr_per_eps))
    k = np.array([s_sr_per_eps[e] / e**2 for e in eps])
    res = {"yield_ul_stat": float(ul), "yield_ul": float(ul_unc), "background": b,
           "epsilon_ul_stat": float("nan"), "epsilon_ul": float("nan")}
    if note is not None:
        res["note"] = note
    if not np.all(k > 0):
        return res
    grid = np.geomspace(1e-6, 0.5, 4001)
    s = np.exp(np.interp(np.log(grid), np.log(eps), np.log(k))) * grid**2
    for key, u in (("epsilon_ul_stat", ul), ("epsilon_ul", ul_unc)):
        i = int(np.searchsorted(s, u))
        if 0 < i < grid.size:
            res[key] = float(grid[i])
    return res


# ---------------------------------------------------------------------------------------
# plots


def _plots(bkg, sigs, reg: Regions, cfg, out: Path, grid_rows) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    from ._common import save_figure_atomic

    mass = cfg["mass"]
    lumi = cfg["luminosities_invnb"][0]
    r_edges = np.linspace(0.0, 3.0, 61)
    dm_edges = np.linspace(-40.0, 10.0, 51)
    eps_list = sorted(sigs)
    panels = [("conversion background", bkg)] + [(f"A' 17 MeV, eps = {e:.2g}", sigs[e]) for e in eps_list]
    ncol = 2
    nrow = (len(panels) + 1) // 2
    fig, axs = plt.subplots(nrow, ncol, figsize=(11, 4.2 * nrow), squeeze=False)
    for ax, (title, c) in zip(axs.flat, panels):
        inwin = np.abs(c["m_ll"] - mass) < reg.window
        w = c["xs_weight_nb"][inwin] * lumi
        h, _, _, im = ax.hist2d(c["r_xy_cm"][inwin], c["delta_m"][inwin] * 1e3, bins=[r_edges, dm_edges],
                                weights=w, norm=LogNorm(), cmap="viridis")
        fig.colorbar(im, ax=ax, label=f"events / bin at {cfg['luminosity_labels'][0]}")
        ax.plot([0, reg.r_sr, reg.r_sr], [-reg.dm_sr * 1e3] * 2 + [10], "r-", lw=1.5, label="SR")
        ax.plot([reg.r_sb, reg.r_sb, 3.0], [-40, -reg.dm_sb * 1e3, -reg.dm_sb * 1e3], "w--", lw=1.5,
                label="sideband")
        ax.set(xlabel="r_xy (vertex fit) [cm]", ylabel="Delta M = M_after - M_before [MeV]",
               title=f"{title}: |M_ee - {mass * 1e3:g} MeV| < {reg.window * 1e3:g} MeV")
        ax.legend(loc="lower right", fontsize=8)
    for ax in list(axs.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    p1 = save_figure_atomic(fig, out / "sideband_2d.png")
    plt.close(fig)

    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    for label, c in [("conversions", bkg)] + [(f"A' eps={e:.2g}", sigs[e]) for e in eps_list]:
        inwin = np.abs(c["m_ll"] - mass) < reg.window
        w = c["xs_weight_nb"][inwin]
        if w.sum() <= 0:
            continue
        ax[0].hist(c["r_xy_cm"][inwin], bins=r_edges, weights=w / w.sum(), histtype="step", label=label)
        ax[1].hist(c["delta_m"][inwin] * 1e3, bins=dm_edges, weights=w / w.sum(), histtype="step",
                   label=label)
        ax[2].hist(c["m_ll"] * 1e3, bins=np.linspace(0, 40, 81),
                   weights=c["xs_weight_nb"] / c["xs_weight_nb"].sum(), histtype="step", label=label)
    ax[0].set(xlabel="r_xy [cm]", ylabel="fraction (mass window)", yscale="log")
    ax[1].set(xlabel="Delta M [MeV]", ylabel="fraction (mass window)", yscale="log")
    ax[2].set(xlabel="M_ee after the fits [MeV]", ylabel="fraction (all candidates)")
    ax[2].axvspan((mass - reg.window) * 1e3, (mass + reg.window) * 1e3, color="grey", alpha=0.2)
    for a in ax:
        a.legend(fontsize=8)
    fig.tight_layout()
    p2 = save_figure_atomic(fig, out / "sideband_projections.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    sel = [r for r in grid_rows if r["window_GeV"] == reg.window and r["dm_sb_GeV"] == reg.dm_sb
           and r["r_sb_cm"] == reg.r_sb]
    for dm in sorted({r["dm_sr_GeV"] for r in sel}):
        rr = sorted((r for r in sel if r["dm_sr_GeV"] == dm), key=lambda r: r["r_sr_cm"])
        ax.plot([r["r_sr_cm"] for r in rr], [r["z_asimov"] for r in rr], "o-",
                label=f"dm_sr = {dm * 1e3:g} MeV")
    ax.axvline(reg.r_sr, color="k", ls=":")
    ax.set(xlabel="r_sr [cm]", ylabel="Asimov Z (with B uncertainty)",
           title=f"optimisation at eps = {cfg['optimise_epsilon']:g}, {cfg['luminosity_labels'][0]}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p3 = save_figure_atomic(fig, out / "sideband_optimisation.png")
    plt.close(fig)
    return [p1, p2, p3]


# ---------------------------------------------------------------------------------------
# entry point


def main(args: Any) -> dict[str, Any]:
    """Run the sideband design (``isrsim sideband``); returns a JSON-able summary."""
    from ..detector import load_detector
    from ._common import write_csv_atomic

    cfg = load_config(args)
    det = load_detector(cfg["detector"])
    _check_processes(cfg, det)
    out = Path(cfg["output"])
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"output = {str(out)!r} cannot be created ({exc.strerror or exc})"
        raise OutputError(msg) from None
    t0 = time.perf_counter()
    sigs = {e: _signal_sample(cfg, det, e) for e in cfg["epsilon"]}
    bkg = _background_sample(cfg, det, "optimisation")
    clo = _background_sample(cfg, det, "closure")
    g_opt = _layer_group(det, bkg["truth_conv_layer"], cfg["layer_groups"])
    g_clo = _layer_group(det, clo["truth_conv_layer"], cfg["layer_groups"])
    _say(cfg, "optimising the regions")
    reg, grid_rows = _optimise(bkg, sigs, cfg, g_opt)
    if reg is None:
        msg = ("no (SR, sideband) choice of the grid satisfies max_contamination = "
               f"{cfg['max_contamination']} with >= {cfg['min_mc_events']} MC events in each region; "
               "raise background_events or widen the grid")
        raise ConfigError(msg)
    projections = []
    for lab, lumi in zip(cfg["luminosity_labels"], cfg["luminosities_invnb"]):
        y = region_yields(bkg, sigs, reg, cfg, lumi, g_opt)
        p = predict_background(y["transfer"], y["transfer_mc_rel"], y["transfer_syst_rel"], y["b_sb"])
        lim = projected_epsilon_limit(y["s_sr"], p["prediction"], b_err=p["total"],
                                      convention=cfg["convention"], cl=cfg["cl"])
        projections.append({
            "luminosity": lab, "luminosity_invnb": lumi, "b_sb_expected": y["b_sb"],
            "b_sr_true_mc": y["b_sr"], "b_sr_prediction": p,
            "signal_sr": {f"{e:g}": v for e, v in y["s_sr"].items()},
            "signal_sb": {f"{e:g}": v for e, v in y["s_sb"].items()},
            "contamination": {f"{e:g}": v for e, v in y["contamination"].items()},
            "epsilon_ul_median": lim["epsilon_ul"], "yield_ul_median": lim["yield_ul"],
            "epsilon_ul_median_stat_only": lim["epsilon_ul_stat"],
            "yield_ul_median_stat_only": lim["yield_ul_stat"],
            **({"note": lim["note"]} if "note" in lim else {})})
    # closure on the independent sample (expected counts at the first luminosity)
    lumi0 = cfg["luminosities_invnb"][0]
    y_opt = region_yields(bkg, sigs, reg, cfg, lumi0, g_opt)
    y_clo = region_yields(clo, sigs, reg, cfg, lumi0, g_clo)
    p_clo = predict_background(y_opt["transfer"], y_opt["transfer_mc_rel"], y_opt["transfer_syst_rel"],
                               y_clo["b_sb"], n_sb_err=y_clo["b_sb_mc_err"])
    # MC statistics only: both samples have the nominal material and scales, so the shape
    # variations cannot differ between them (with them, the pull's denominator was ~20 % larger
    # and the only test of the method weaker); a non-closure would be an extra systematic
    closure_sigma = math.hypot(p_clo["stat"], y_clo["b_sr_mc_err"])
    closure = {"predicted": p_clo["prediction"], "predicted_err": p_clo["stat"],
               "predicted_err_with_shape": p_clo["total"],
               "true": y_clo["b_sr"], "true_mc_err": y_clo["b_sr_mc_err"],
               "pull": (p_clo["prediction"] - y_clo["b_sr"]) / closure_sigma,
               "ratio": p_clo["prediction"] / y_clo["b_sr"] if y_clo["b_sr"] > 0 else float("nan"),
               "n_mc_sr": y_clo["n_mc_sr"], "n_mc_sb": y_clo["n_mc_sb"]}
    # outputs
    rows = []
    for name, yy in (("optimisation", y_opt), ("closure", y_clo)):
        rows.append([name, "background", "", yy["b_sr"], yy["b_sr_mc_err"], yy["b_sb"], yy["b_sb_mc_err"],
                     yy["n_mc_sr"], yy["n_mc_sb"]])
    for e in cfg["epsilon"]:
        rows.append(["signal", "darkphoton", e, y_opt["s_sr"][e], "", y_opt["s_sb"][e], "", "", ""])
    files = [write_csv_atomic(out / "sideband_regions.csv",
                              ["sample", "process", "epsilon", "sr", "sr_mc_err", "sb", "sb_mc_err",
                               "n_mc_sr", "n_mc_sb"], rows,
                              comments=[f"expected events at {cfg['luminosity_labels'][0]}",
                                        json.dumps(reg.as_dict())])]
    if grid_rows:
        hdr = list(grid_rows[0])
        files.append(write_csv_atomic(out / "sideband_grid.csv", hdr,
                                      [[r[k] for k in hdr] for r in grid_rows]))
    files += _plots(bkg, sigs, reg, cfg, out, grid_rows)
    summary = {
        "workflow": "sideband", "detector": cfg["detector"], "mass_GeV": cfg["mass"],
        "epsilon": cfg["epsilon"], "optimise_epsilon": cfg["optimise_epsilon"],
        "max_contamination": cfg["max_contamination"], "vertex_twin": cfg["vertex_twin"],
        "regions": reg.as_dict(),
        "transfer_factor": y_opt["transfer"], "transfer_mc_rel": y_opt["transfer_mc_rel"],
        "transfer_syst_rel": y_opt["transfer_syst_rel"],
        "transfer_syst_sources": y_opt["transfer_syst_sources"],
        "projections": projections, "closure": closure,
        "signal": {f"{e:g}": {"cross_section_nb": float(sigs[e]["cross_section_nb"]),
                              "selected_fraction": float(sigs[e]["m_ll"].size / cfg["signal_events"])}
                   for e in cfg["epsilon"]},
        "background_cross_section_nb": float(bkg["cross_section_nb"]),
        "background_events_per_sample": cfg["background_events"],
        "signal_events": cfg["signal_events"], "seed": cfg["seed"],
        "n_grid_valid": len(grid_rows), "outputs": [str(f) for f in files],
        "seconds": round(time.perf_counter() - t0, 2)}
    path = out / "sideband_summary.json"
    tmp = out / f".sideband_summary.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(summary, indent=1, default=float))
    os.replace(tmp, path)
    summary["outputs"].append(str(path))
    return summary
