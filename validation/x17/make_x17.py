"""Belle II X17 projections (issue 8 item 4b): run ``isrsim sideband`` at 17 MeV for 314/fb and
1/ab and write ``validation/x17/README.md`` + PNGs.

Usage: ``python validation/x17/make_x17.py [--events N] [--signal-events N] [--seed S]``
(defaults: the bundled card ``sideband_belle2_x17``; about 2-4 minutes on one core).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
from importlib.resources import files
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy import stats
from scipy.optimize import least_squares

import isrsim
from isrsim.constants import M_E
from isrsim.detector import load_detector
from isrsim.detector.simulate import simulate
from isrsim.helix import perigee_jacobian, wrap_angle
from isrsim.processes import make_process
from isrsim.reco._linalg import unpack_sym
from isrsim.reco.vertexfit import TWIN_CHOICES, fit_vertex
from isrsim.runner import apply_primary_vertex
from isrsim.workflows import sideband

HERE = Path(__file__).resolve().parent
WINDOW = (6.8e-4, 1.4e-3)  # open X17 window, physics.md 6.4 (NA64 / KLOE, g-2)


def _args(events: int | None, seed: int | None, card: Path | None, work: Path) -> argparse.Namespace:
    return argparse.Namespace(card=None if card is None else str(card), output=str(work),
                              detector=None, luminosity="314/fb,1/ab", mass=[0.017], epsilon=None,
                              events=events, toys=None, seed=seed, workers=None, quiet=True)


def _run(events: int | None, seed: int | None, twin: str | None = None) -> dict:
    """``isrsim sideband`` with the bundled card; ``twin`` overrides its ``vertex_twin``."""
    card = None
    work = HERE / "_work"
    if twin is not None:
        work = HERE / f"_work_{twin}"
        work.mkdir(exist_ok=True)
        text = (files("isrsim") / "cards" / "sideband_belle2_x17.toml").read_text()
        text = re.sub(r'(?m)^vertex_twin = "[a-z_0-9]+"', f'vertex_twin = "{twin}"', text)
        card = work / "card.toml"
        card.write_text(text)
    return sideband.main(_args(events, seed, card, work))


def _profile_chi2(h, w, q, bz, vertex, p0):
    """chi2 of two measured helices (``h`` (2, 5), whitening ``w`` (2, 5, 5)) with the common
    vertex fixed at ``vertex`` and both momenta fitted (scipy least squares from ``p0``)."""
    jac = np.zeros((5, 6))

    def res(p):
        out = []
        for k in range(2):
            hk = np.array(perigee_jacobian(*vertex, *p[3 * k:3 * k + 3], q[k], bz, jac))
            d = h[k] - hk
            d[1] = wrap_angle(d[1])
            out.append(w[k] @ d)
        return np.concatenate(out)

    return 2.0 * least_squares(res, p0, x_scale=np.abs(p0) + 1e-3, xtol=1e-12, ftol=1e-12).cost


def _spot_diagnostic(n_events: int = 200_000, n_profile: int = 300, seed: int = 7) -> dict:
    """Where do the conversions of the prompt-like corner (r_xy < 1 mm, |Delta M| < 1 MeV) come
    from? Forced beam-pipe + PXD conversions (the sideband's background process, no photon or
    PID cuts), two opposite-charge tracks, vertex fit with both twin conventions; pairs with
    |M_after - 17 MeV| < 2 MeV. Returns the signed flight distance of the fitted vertex along the
    pair's transverse momentum and, for up to ``n_profile`` corner pairs, chi2(vertex fixed at
    the true conversion point, momenta fitted) - chi2(fit): negative would mean the fit missed a
    better minimum. The process settings are the bundled sideband card's."""
    cfg = sideband.load_config(_args(None, None, None, HERE / "_work"))
    det = load_detector(cfg["detector"])
    bz = det.bz_T
    proc = make_process("diphoton", det.beam, theta_lab_deg=cfg["theta_lab_deg"], conversion="forced",
                        conversion_layers=cfg["conversion_layers"], detector=det,
                        m_pca_max=cfg["m_pca_max"])
    rng = np.random.default_rng(seed)
    t = proc.sample(rng, n_events, weighted=False)[0]
    apply_primary_vertex(t, det.beam, rng)
    r = simulate(t, det, rng)
    idx = np.flatnonzero((r.ntrk == 2) & (r.charge[:, 0] * r.charge[:, 1] < 0))
    h1, h2, c1, c2 = r.helix[idx, 0], r.helix[idx, 1], r.cov[idx, 0], r.cov[idx, 1]
    true_v = t.vtx[idx, r.trk_truth[idx, 0]]
    out = {"n_pairs": int(idx.size)}
    for twin in TWIN_CHOICES:
        f = fit_vertex(h1, c1, h2, c2, bz=bz, mass=M_E, twin=twin)
        pt = f.p1[:, :2] + f.p2[:, :2]
        flight = np.sum(f.vertex[:, :2] * pt, axis=1) / np.hypot(pt[:, 0], pt[:, 1])
        win = np.abs(f.m_after - 0.017) < 0.002
        corner = win & (f.r_xy < 0.1) & (np.abs(f.delta_m) < 0.001)
        out[twin] = {"flight": flight[win], "n_window": int(win.sum()), "n_corner": int(corner.sum())}
        if twin == "min_chi2":
            dchi = []
            for i in np.flatnonzero(corner)[:n_profile]:
                w = np.empty((2, 5, 5))
                for k, c in enumerate((c1[i], c2[i])):
                    v = np.zeros((5, 5))
                    unpack_sym(c, 5, v)
                    w[k] = np.linalg.cholesky(np.linalg.inv(v)).T
                q = np.sign([h1[i, 2], h2[i, 2]])
                p0 = np.concatenate([f.p1[i], f.p2[i]])
                dchi.append(_profile_chi2(np.stack([h1[i], h2[i]]), w, q, bz, true_v[i], p0) - f.chi2[i])
            out["dchi2"] = np.array(dchi)
            # the along-flight resolution: the radial error from the reported minimum's
            # covariance alone (r_xy_err also holds the other minimum of a twin pair)
            u = f.vertex[corner, :2] / f.r_xy[corner, None]
            err_one = np.sqrt(np.einsum("ni,nij,nj->n", u, f.vertex_cov[corner, :2, :2], u))
            out["corner_r_err_median"] = float(np.median(err_one))
    return out


def _spot_plot(d: dict) -> Path:
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.arange(-1.0, 3.0001, 0.05)
    for twin in TWIN_CHOICES:
        ax[0].hist(d[twin]["flight"], bins=bins, histtype="step", label=f"twin = {twin!r}")
    ax[0].axvspan(-0.1, 0.1, color="grey", alpha=0.2, label="|L| < 1 mm")
    ax[0].set(xlabel="signed transverse flight distance L of the fitted vertex [cm]",
              ylabel="conversion pairs / 0.5 mm", title="|M_after - 17 MeV| < 2 MeV")
    ax[0].legend(fontsize=8)
    x = np.linspace(0, 15, 301)
    ax[1].hist(d["dchi2"], bins=np.linspace(-1, 15, 65), density=True, histtype="step",
               label=f"{d['dchi2'].size} corner pairs")
    ax[1].plot(x, stats.chi2(3).pdf(x), "k:", label="chi2(3) (unselected pairs)")
    ax[1].set(xlabel="chi2(vertex at the true conversion point) - chi2(fit)",
              title="r_xy < 1 mm, |Delta M| < 1 MeV, twin = 'min_chi2'")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    p = HERE / "conversion_corner.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def _limit_plot(s: dict) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    labels = [p["luminosity"] for p in s["projections"]]
    x = np.arange(len(labels))
    ax.axhspan(*WINDOW, color="orange", alpha=0.3, label="open X17 window 6.8e-4 - 1.4e-3")
    ax.plot(x, [p["epsilon_ul_median"] for p in s["projections"]], "ko-",
            label="median expected 90% CL (B from sidebands, with its uncertainty)")
    ax.plot(x, [p["epsilon_ul_median_stat_only"] for p in s["projections"]], "bs--", mfc="none",
            label="same, B known exactly (counting_upper_limit)")
    ax.set(xticks=x, xticklabels=labels, yscale="log", ylabel="epsilon", xlabel="integrated luminosity",
           title="isrsim: Belle II e+e- -> gamma A'(17 MeV) -> gamma e+e-")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_ylim(2e-4, 2e-2)
    fig.tight_layout()
    p = HERE / "x17_epsilon_limit.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p


def _fmt(v: float, d: int = 3) -> str:
    return f"{v:.{d}g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=None, help="background MC events per sample")
    ap.add_argument("--seed", type=int, default=None)
    opt = ap.parse_args()
    s = _run(opt.events, opt.seed)
    alt = _run(opt.events, opt.seed, twin="inner")
    shutil.rmtree(HERE / "_work_inner", ignore_errors=True)
    diag = _spot_diagnostic()
    _spot_plot(diag)
    work = HERE / "_work"
    for name in ("sideband_2d.png", "sideband_projections.png", "sideband_optimisation.png"):
        shutil.copy(work / name, HERE / name)
    (HERE / "x17_summary.json").write_text(json.dumps(s, indent=1, default=float))
    _limit_plot(s)
    shutil.rmtree(work, ignore_errors=True)
    reg = s["regions"]
    c = s["closure"]
    lines = [
        "# Belle II X17 projections at 17 MeV (issue 8 item 4b)",
        "",
        f"Generated by `python validation/x17/make_x17.py` (isrsim {isrsim.__version__}, seed "
        f"{s['seed']}, {s['background_events_per_sample']} weighted conversion events per background "
        f"sample (two independent samples), {s['signal_events']} A' events per epsilon; numpy "
        f"{np.__version__}, Python {platform.python_version()}; {s['seconds']:.0f} s).",
        "It runs `isrsim sideband --mass 0.017 --luminosity 314/fb,1/ab` (bundled card "
        "`sideband_belle2_x17.toml`) and reads its JSON summary (`x17_summary.json`).",
        "",
        "## Samples and selection",
        "",
        "* signal: `darkphoton` e+e- -> gamma A', A' -> e+e-, m = 17 MeV, eps = "
        + ", ".join(s["signal"]) + " with the physical c tau (displaced decays, physics.md 6.3); "
        "sigma x BR inside the generated photon band: "
        + ", ".join(f"{_fmt(v['cross_section_nb'] * 1e6)} fb (eps = {e})" for e, v in s["signal"].items())
        + "; fraction passing `belle2_lowmass`: "
        + ", ".join(f"{v['selected_fraction']:.3f}" for v in s["signal"].values()) + ".",
        f"* background: `diphoton` with one photon converted (forced) in the beam pipe and PXD, "
        f"M_PCA < 60 MeV preselection; sigma = {_fmt(s['background_cross_section_nb'] * 1e3)} pb.",
        "* reconstruction: `belle2_lowmass` (two electrons, photon E_cms > 4 GeV, helix vertex fit "
        f"chi2 < 20 with twin convention `{s['vertex_twin']}`, 4C fit chi2 < 40); M_ee is the mass after the fits, r_xy and "
        "Delta M = M_after - M_before come from the vertex fit.",
        "",
        "## Regions (optimised at 314/fb, eps = 1e-3, Asimov Z with the B uncertainty)",
        "",
        f"* mass window |M_ee - 17 MeV| < {reg['window_GeV'] * 1e3:g} MeV",
        f"* signal region: r_xy < {reg['r_sr_cm']:g} cm and Delta M > -{reg['dm_sr_GeV'] * 1e3:g} MeV",
        f"* sideband: Delta M < -{reg['dm_sb_GeV'] * 1e3:g} MeV and r_xy > {reg['r_sb_cm']:g} cm",
        f"* transfer factor T = B_SR/B_SB = {s['transfer_factor']:.4f} +- "
        f"{s['transfer_mc_rel'] * 100:.1f} % (MC stat) +- {s['transfer_syst_rel'] * 100:.1f} % (shape: "
        + ", ".join(f"{k} {v * 100:.1f} %" for k, v in s["transfer_syst_sources"].items()) + ")",
        f"* {s['n_grid_valid']} grid points satisfied the constraints (contamination <= "
        f"{s['max_contamination']:.0%}, >= 10 MC events per region).",
        "",
        "![](sideband_2d.png)",
        "",
        "![](sideband_projections.png)",
        "",
        "## Results",
        "",
        "| L | B_SB | B_SR predicted | +- stat (SB) | +- MC stat (T) | +- shape syst "
        "| S_SR eps=6.8e-4 / 1e-3 / 1.4e-3 | SB contamination (max over eps) | eps 90% CL, median exp. "
        "| same, B known |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in s["projections"]:
        b = p["b_sr_prediction"]
        lines.append(
            f"| {p['luminosity']} | {_fmt(p['b_sb_expected'])} | {_fmt(b['prediction'])} | "
            f"{_fmt(b['sideband_stat'])} | {_fmt(b['transfer_mc_stat'])} | {_fmt(b['shape_syst'])} | "
            + " / ".join(_fmt(v) for v in p["signal_sr"].values())
            + f" | {max(p['contamination'].values()):.2e} | {_fmt(p['epsilon_ul_median'])} | "
            f"{_fmt(p['epsilon_ul_median_stat_only'])} |")
    reach = []
    for p in s["projections"]:
        e = p["epsilon_ul_median"]
        inside = e < WINDOW[1]
        reach.append(f"{p['luminosity']}: eps_UL = {_fmt(e)} -> "
                     + (f"reaches into the window (excludes {_fmt(e)} - 1.4e-3)" if inside
                        else "does NOT reach into the window"))
    b_sr = [p["b_sr_prediction"]["prediction"] for p in s["projections"]]
    s_sr = [p["signal_sr"]["0.001"] for p in s["projections"]]
    stat_only = "; ".join(
        f"{p['luminosity']}: {_fmt(p['epsilon_ul_median_stat_only'])}, "
        + ("inside the window" if p["epsilon_ul_median_stat_only"] < WINDOW[1] else "above the window")
        for p in s["projections"])
    lines += [
        "",
        "![](x17_epsilon_limit.png)",
        "",
        "**Does the projection reach into the open window (6.8e-4 - 1.4e-3)?** " + "; ".join(reach) + ".",
        "",
        f"Reading: B_SR is {_fmt(min(b_sr))} - {_fmt(max(b_sr))} events while S_SR (epsilon = 1e-3) is "
        f"{_fmt(min(s_sr))} - {_fmt(max(s_sr))}, and the relative uncertainty of the "
        "prediction (shape systematic + transfer-factor MC statistics, a few %) is far larger than "
        "1/sqrt(B). The limit is therefore systematics-limited and (almost) independent of the "
        "luminosity: S_up and S both grow like L. With the background known exactly (statistics "
        f"only, last column): {stat_only}. Reaching "
        "the window needs a much stronger conversion rejection than this cut-based (r_xy, Delta M) "
        "signal region in isrsim's parameterised detector (e.g. a multivariate selection, a "
        "conversion-constrained fit, hit-level information) or a background prediction known to ~0.1 %.",
        "",
        "The prediction T B_SB reproduces the optimisation sample's own B_SR by construction (T is "
        "taken from that sample), so the test of the method is the closure on an independent sample:",
        "",
        f"Closure (independent background sample, expected counts at 314/fb): predicted "
        f"{_fmt(c['predicted'])} +- {_fmt(c['predicted_err'])} (MC: T and the closure sample's "
        f"sideband; +- {_fmt(c['predicted_err_with_shape'])} with the shape systematic, which cannot "
        f"differ between the two samples and is left out of the pull), simulated {_fmt(c['true'])} +- "
        f"{_fmt(c['true_mc_err'])} (MC); ratio {c['ratio']:.3f}, pull {c['pull']:+.2f}.",
        "",
        "Limit recipe: counting experiment in the signal region with the Asimov background-only "
        "observation n = B_pred; `isrsim.stats.counting_upper_limit` (q~_mu asymptotic, 90 % CL) gives "
        "S_up for a known background ('same, B known'); the headline number inflates it by "
        "sqrt(1 + sigma_B^2/B) (asymptotic Gaussian-constrained background). S_SR(eps) = sigma x L x "
        "efficiency in the SR, interpolated in eps between the simulated points (efficiency depends on "
        "eps through the decay length).",
        "",
        "## Vertex-fit twin convention",
        "",
        "Two nearly tangent helices (a conversion pair) that cross twice have two chi2 minima, one on "
        "each side of the conversion point (`isrsim.reco.vertexfit`). This projection keeps the lower "
        f"chi2 (`vertex_twin = \"{s['vertex_twin']}\"`); the same samples and grid with the former "
        "convention, the inner intersection (`\"inner\"`):",
        "",
        "| vertex_twin | mass window | SR | sideband | T | B_SR predicted (314/fb) | S_SR eps = 1e-3 (314/fb) "
        "| eps_UL 314/fb | eps_UL 1/ab |",
        "|---|---|---|---|---|---|---|---|---|",
        *[f"| {x['vertex_twin']} | {x['regions']['window_GeV'] * 1e3:g} MeV | r_xy < {x['regions']['r_sr_cm']:g} cm, "
          f"Delta M > -{x['regions']['dm_sr_GeV'] * 1e3:g} MeV | Delta M < -{x['regions']['dm_sb_GeV'] * 1e3:g} MeV, "
          f"r_xy > {x['regions']['r_sb_cm']:g} cm | {x['transfer_factor']:.4f} | "
          f"{_fmt(x['projections'][0]['b_sr_prediction']['prediction'])} | "
          f"{_fmt(x['projections'][0]['signal_sr']['0.001'])} | {_fmt(x['projections'][0]['epsilon_ul_median'])} | "
          f"{_fmt(x['projections'][1]['epsilon_ul_median'])} |" for x in (s, alt)],
        "",
        "### The prompt-like corner of the conversion background",
        "",
        f"`sideband_2d.png` shows conversions piled up at r_xy ~ 0, Delta M ~ 0. A separate sample of "
        f"{diag['n_pairs']} two-track forced conversions (`conversion_corner.png`, no photon or PID cuts) "
        f"has {diag['min_chi2']['n_window']} pairs with |M_after - 17 MeV| < 2 MeV, of which "
        f"{diag['min_chi2']['n_corner']} in the corner r_xy < 1 mm, |Delta M| < 1 MeV "
        f"({diag['inner']['n_corner']} of {diag['inner']['n_window']} with `inner`).",
        "",
        "![](conversion_corner.png)",
        "",
        "* The signed flight distance L of the fitted vertex (left) has no spike at L = 0: the pile-up "
        "is the geometry of the (r_xy, Delta M) plane. Delta M ~ -M_before L/R (the opening angle of a "
        "conversion pair grows linearly with the distance back from its vertex, physics.md 5.4, and "
        "the mass with the opening angle), so for every M_before "
        "and conversion radius R the pairs fitted near the IP land on the same point, while those fitted "
        "further out fan out in Delta M. The corner holds the conversions whose vertex the fit places "
        "within its along-flight resolution of the IP (median sigma(r_xy) of the corner pairs "
        f"{diag['corner_r_err_median']:.2f} cm against R = 1-2.2 cm).",
        f"* For {diag['dchi2'].size} corner pairs, chi2 with the vertex fixed at the true conversion "
        f"point (momenta refitted) minus the fit's chi2 (right): median {np.median(diag['dchi2']):.2f}, "
        f"{np.mean(diag['dchi2'] < -0.01):.1%} below -0.01 (a missed better minimum would be negative). "
        "The fit finds the minimum; the measured helices prefer the IP. In this parameterised detector "
        "the corner is a resolution effect, not a fit failure; a real detector can add what the "
        "parameterisation lacks (hits inside the conversion radius, hit-level conversion fits).",
        "",
        "## Limitations (read before quoting any number)",
        "",
        "* Only the gamma gamma conversion background (beam pipe + PXD) is simulated. Missing: "
        "radiative Bhabha e+e- -> e+e- gamma (t-channel, prompt and the dominant low-mass "
        "e+e- gamma background in reality), Bhabha with a converted/brems photon, conversions in "
        "the SVD and beyond (removed by the M_PCA < 60 MeV preselection and the tracking model "
        "only approximately), e+e- -> e+e- e+e- two-photon events, beam background, and fake or "
        "merged tracks.",
        "* No trigger model. The signal is back-to-back ECL energy like gamma gamma/Bhabha and is "
        "removed by the L1 3D Bhabha veto (detectors.md 3.5); the trigger efficiency (CDC track "
        "triggers or prescaled bits) is a first-order factor not included here.",
        "* The signal yield is tree-level sigma(e+e- -> gamma A') (physics.md 6.1) inside the "
        "generated photon band, no ISR/FSR corrections; the Belle II selection cuts are isrsim's own.",
        "* The detector response is parameterised (Gaussian helix covariance, no explicit multiple "
        "scattering kicks, no hit-level pattern recognition): the r_xy and Delta M resolutions of "
        "nearly collinear pairs drive the separation, and the choice between the vertex fit's twin "
        "minima changes B_SR (table above). Real separation may be better (hit information, "
        "conversion-specific fits) or worse.",
        "* The conversions fitted near the IP (the corner above) keep M_after ~ M_before ~ 17 MeV and "
        "look exactly like a prompt A'; they dominate B_SR. Their rate is set by the impact-parameter "
        "resolution of the detector file; it is the number to check against full simulation first.",
        "* The transfer-factor MC statistics are a large part of the B uncertainty; more background "
        "MC (`--events`) shrinks it, and the optimiser then prefers smaller signal regions.",
        "* The 314/fb and 1/ab figures come from the seed talk; they could not be confirmed from "
        "public Belle II material (detectors.md 4.1).",
    ]
    (HERE / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(reach))


if __name__ == "__main__":
    main()
