"""Belle II low-mass (X17 region) projection with the MC-template background (issue 8 item 4b).

Runs the bundled card ``project_belle2`` (``isrsim project --detector belle2 --luminosity
314/fb,1/ab --mass 0.005 0.1 --toys 200``: 200 background-only toys at 17 MeV), copies the plot,
and writes README.md with the limits at 17 MeV, the Eq. 1 cross-check and the comparison
with the 2D sideband study (``validation/x17/x17_summary.json``, read only if present).
The event samples are cached in ``$ISRSIM_CACHE`` (default: ``validation/belle2/.cache``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from isrsim import __version__
from isrsim.config import bundled_card
from isrsim.workflows.project import X17_WINDOW, run_projection

HERE = Path(__file__).resolve().parent


def main() -> None:
    t0 = time.perf_counter()
    card = bundled_card("project_belle2")
    card["project"]["toys"] = 200
    card["project"]["cache_dir"] = os.environ.get("ISRSIM_CACHE", str(HERE / ".cache"))
    out = HERE / ".out"
    s = run_projection(card, output=out, progress=True)
    shutil.copy(s["combined_png"], HERE / "belle2_epsilon_limit.png")
    rows = []
    for p, csv in zip(s["projections"], s["csv"]):
        shutil.copy(csv, HERE / Path(csv).name)
        lines = [x for x in Path(csv).read_text().splitlines() if not x.startswith("#")]
        h = lines[0].split(",")
        d = np.array([[float(v) for v in x.split(",")] for x in lines[1:]])
        i = int(np.argmin(np.abs(d[:, 0] - 0.017)))
        rows.append((p["luminosity"], {c: d[i, h.index(c)] for c in h}, d, h))
    x17 = None
    xs = HERE.parent / "x17" / "x17_summary.json"
    if xs.exists():
        x17 = json.loads(xs.read_text())
    sig = {x["mass"]: x for x in s["signal_samples"]}
    bk = {b["process"]: b for b in s["backgrounds"]}
    L = []
    L.append("# Belle II low-mass A' -> e+e- projection with the MC-template background\n")
    L.append(f"Produced by `python validation/belle2/make_belle2.py` (isrsim {__version__}, "
             f"{time.perf_counter() - t0:.0f} s including {s['seconds']:.0f} s for the projection; "
             f"Python {sys.version.split()[0]}). Same numbers as `isrsim project --detector belle2 "
             "--luminosity 314/fb,1/ab --mass 0.005 0.1 --toys 200` (bundled card `project_belle2.toml`; "
             "without `--toys` the toy columns are empty: the card's own `toys = 0`).\n")
    L.append("## Method\n")
    L.append("* **Why not a polynomial**: in the 5-100 MeV e+e- spectrum of `belle2_lowmass` the "
             "gamma gamma conversions dominate and their before-vertex-fit mass M_PCA peaks at the "
             "layer-dependent values of physics.md 5.4 (9, 12.6, 19.8, 35 MeV ...); a global "
             "4th-order polynomial gave chi2/ndf ~ 6600, 46 % converged fits and 'max local Z = 720'. "
             "No smooth function describes this spectrum; the background is taken from the "
             "simulation itself.")
    L.append("* **Background** (`analysis.background = \"template\"`): per 1 MeV bin the expected "
             "counts of the weighted MC at the target luminosity, per component: ISR e+e- gamma "
             f"(s-channel, KF radiator, {bk['isr_ee']['n_events']} events = 20/fb, scaled) and gamma "
             f"gamma with one forced conversion ({bk['diphoton']['n_events']} weighted events). Likelihood "
             "(HistFactory-like): Poisson per bin x Gaussian per-bin factor gamma_i with the relative "
             "MC statistical error sqrt(sum w^2)/sum w (Barlow-Beeston lite, profiled in closed form) x "
             "Gaussian normalisation nuisances: ISR e e 5 % (KF radiator vs higher orders, luminosity), "
             "conversions 20 % (material budget, as the sideband study's material systematic), signal "
             "5 %. Fit window m +- 5 sigma(m); the window's bins constrain the normalisations.")
    L.append("* **Selection / mass variable**: `belle2_lowmass` + conversion veto r_xy < 1 cm and "
             "Delta M = M_after - M_before > -1 MeV (physics.md 5.4). M_ee is `m_ll`, the pair mass "
             "of the 4C fit on the vertex-fitted momenta, i.e. *after* the vertex fit (`m_after` gives "
             "the same distribution to < 1 %). The before-fit mass is not used: for conversions it is "
             "M_PCA ~ 0.3 B R / sqrt(x(1-x)), e.g. 19.8 MeV for the second PXD layer, right on top of "
             "a 17 MeV signal. The veto kept 0.67 of the selected A' at 17 MeV (eps = 1e-3, "
             "displaced decays) and 0.75 of ISR e e, and removed 13/14 of the conversions in 13-21 MeV "
             "(measured 2026-11-20 with the former 'inner' twin convention of the vertex fit; the "
             "efficiencies below are current).")
    L.append("* **Signal**: `darkphoton` (A' -> e e, eps = 1e-3, physical c tau) simulated and "
             "reconstructed at " + ", ".join(f"{m * 1e3:g}" for m in sorted(sig)) + " MeV "
             "(20 000 events each, photon in the CM band 0.338-2.770 rad = lab 17-150 deg); efficiency "
             "and core resolution (IQR/1.349) interpolated linearly in m, shape = residual "
             "distribution of the nearest sample scaled to sigma(m). Yield per eps^2 = "
             "sigma(e+e- -> gamma A', eps = 1, same band) x BR(ee) (`isrsim.physics.darkphoton`, "
             "tree level, physics.md 6.1) x efficiency x L. This is more direct than the paper's "
             "Eq. 1 here: the ratio to the QED yield needs N_QED(bin) at truth level and the same "
             "radiator for both, and the reco-level ISR spectrum below ~20 MeV migrates strongly "
             "(sigma_m ~ 3.4 MeV on a ~1/m spectrum).")
    L.append("* **Limits**: q~_mu one-sided 90 % CL (arXiv:1007.1727). Expected median and +-1/2 "
             "sigma bands from the Asimov data set (= the MC expectation) with the asymptotic "
             "formulae; cross-checked with 200 Poisson toys at 17 MeV (counts ~ Poisson(B), "
             "nuisance global observables and the per-bin MC factors drawn from their constraints).\n")
    L.append("| m [MeV] | efficiency (sel. + veto) | sigma_m [MeV] |")
    L.append("|---|---|---|")
    for m in sorted(sig):
        L.append(f"| {m * 1e3:g} | {sig[m]['efficiency']:.3f} | {sig[m]['sigma_m_GeV'] * 1e3:.2f} |")
    L.append("\n## Results at 17 MeV\n")
    L.append("| L | median eps (90% CL) | -1 sigma / +1 sigma | -2 sigma / +2 sigma | toys median (-1/+1 sigma) "
             "| median, MC stat. neglected | B in +-1 sigma_m (ISR ee / conv.) | MC rel. error in +-1 sigma_m "
             "| A' per eps^2 | Eq. 1 / direct |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    reach = []
    for lum, r, _, _ in rows:
        L.append(f"| {lum} | **{r['eps_exp_median']:.2e}** | {r['eps_exp_m1sigma']:.2e} / {r['eps_exp_p1sigma']:.2e} "
                 f"| {r['eps_exp_m2sigma']:.2e} / {r['eps_exp_p2sigma']:.2e} "
                 f"| {r['eps_toys_median']:.2e} ({r['eps_toys_m1sigma']:.2e} / {r['eps_toys_p1sigma']:.2e}) "
                 f"| {r['eps_exp_median_no_mcstat']:.2e} | {r['bkg_pm1sigma']:.3g} "
                 f"({r['bkg_pm1sigma_isr_ee']:.3g} / {r['bkg_pm1sigma_diphoton']:.3g}) "
                 f"| {r['mc_rel_err_pm1sigma']:.2%} | {r['yield_per_eps2']:.3g} "
                 f"| {r['yield_per_eps2_eq1'] / r['yield_per_eps2']:.2f} |")
        reach.append((lum, r["eps_exp_median"], r["eps_exp_median_no_mcstat"]))
    L.append("")
    for lum, e, e0 in reach:
        L.append(f"* **{lum}**: median expected eps_UL(17 MeV) = {e:.2e} -> "
                 + ("reaches into" if e < X17_WINDOW[1] else "does NOT reach into")
                 + f" the open window {X17_WINDOW[0]:.1e}-{X17_WINDOW[1]:.1e}; with the MC statistical "
                 f"uncertainty neglected (an MC sample much larger than the data) {e0:.2e} -> "
                 + ("reaches into it" if e0 < X17_WINDOW[1] else "does not reach it") + ".")
    r0 = rows[0][1]
    mc_err = f"{r0['mc_rel_err_pm1sigma']:.2%}"
    eq1_ratio = r0["yield_per_eps2_eq1"] / r0["yield_per_eps2"]
    L.append("\nThe projection is limited by the MC statistics of the background template at both "
             f"luminosities ({mc_err} per +-1 sigma_m window vs 1/sqrt(B) = 0.1 % / 0.05 %): with this "
             "MC the 1/ab limit is no better than 314/fb. The run card's MC (2 M conversion events, "
             "20/fb of ISR e e) is what fits into a few minutes on 2 cores; the 'MC stat. neglected' "
             "column is the limit an adequate MC sample (>> the data luminosity, or a validated "
             "smoothing of the template) would give.\n")
    L.append("![](belle2_epsilon_limit.png)\n")
    L.append("## Eq. 1 cross-check\n")
    L.append("Eq. 1 (BESIII 2017; physics.md 6.2) with N_QED(bin) = ISR e e candidates (after the same "
             "selection and veto) whose *truth* pair mass lies in the 1 MeV bin at m, N_f = 1: its "
             f"yield per eps^2 is {eq1_ratio:.2f}x the direct one at 17 MeV (range over 5-100 MeV in the summary). "
             "Decomposition: the ISR MC uses the Kuraev-Fadin radiator, the direct A' cross section is "
             "tree level; W_KF/W_LO = 1.31 at 17 MeV (1.36 at 6 MeV, 1.23 at 100 MeV; "
             "`sigma_aprime_gamma_isr_nb(radiator='kf')/(...'lo')`), and the A' at eps = 1e-3 decays "
             "displaced, which costs ~4 % efficiency (0.339 vs 0.352 for c tau = 0, measured on "
             "2026-11-20 with the former 'inner' vertex-fit twin convention) -> 1.31 x 1.04 = 1.36. "
             "The direct (tree-level) normalisation is the conservative choice; Eq. 1 with the KF "
             f"radiator would lower eps_UL by {1 - eq1_ratio ** -0.5:.0%}.\n")
    L.append("## Comparison with the 2D sideband study (validation/x17)\n")
    if x17:
        for p in x17["projections"]:
            L.append(f"* {p['luminosity']}: sideband counting (r_xy, Delta M signal region, B from the "
                     f"sideband with {x17['transfer_syst_rel']:.1%} shape + {x17['transfer_mc_rel']:.1%} MC "
                     f"systematic): eps_UL = {p['epsilon_ul_median']:.2e}; "
                     f"with B known: {p['epsilon_ul_median_stat_only']:.2e}.")
        L.append("\nBoth studies agree qualitatively: the background is known from simulation only to a "
                 "few per mille to per cent, which dominates over the data statistics, so the limit "
                 "hardly improves from 314/fb to 1/ab. The template fit is stronger than the sideband "
                 "counting (it uses the mass shape: the signal is 3.4 MeV wide on a broad background and "
                 "the normalisations are constrained by the neighbouring bins, and its systematics are only "
                 "MC statistics + normalisations, not a transfer-factor shape systematic). With "
                 "the background known exactly both come close to the window (sideband "
                 + " / ".join(f"{p['epsilon_ul_median_stat_only']:.2e}" for p in x17["projections"])
                 + ", template the 'MC stat. neglected' column).")
    else:
        L.append("validation/x17/x17_summary.json not found: run validation/x17/make_x17.py first.")
    L.append("\n## Limitations\n")
    L.append("* Backgrounds: only ISR e+e- gamma (s-channel) and gamma gamma conversions. Missing: radiative "
             "Bhabha (t-channel, in reality the dominant prompt e+e- gamma background), e+e- -> e+e- e+e-, "
             "beam background, fake tracks. Without them the limits are optimistic.")
    L.append("* No trigger model (the signal is Bhabha-like in the ECL); tree-level signal cross section; "
             "isrsim's own selection cuts [U]; parameterised detector (the 3.4 MeV mass resolution and the "
             "vertex resolution of nearly collinear pairs drive everything).")
    L.append("* The efficiency is evaluated at eps = 1e-3 (decay length 1.5 mm at 17 MeV); at the limit "
             "(eps ~ 4e-3) decays are ~16x shorter and the efficiency ~4 % higher (prompt value): the quoted limit "
             "is conservative by ~2 %. At 5-6 MeV and eps = 1e-3 the decay length is ~2 cm and the veto "
             "loses more signal.")
    L.append("* Bin-to-bin shape uncertainty beyond MC statistics is not included (card `bin_unc`, default 0); a "
             "1 % uncorrelated per-bin uncertainty would dominate at these background levels.")
    (HERE / "README.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
