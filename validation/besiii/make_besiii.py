"""Reproduction of the BESIII 2017 dark-photon search (arXiv:1705.04265) at 2.93/fb.

Run: python validation/besiii/make_besiii.py  (writes PNGs and README.md next to this file)

Generates (or reuses from ``$ISRSIM_CACHE`` or a temporary directory) the ISR mu mu, e e and
pi pi (mu misID) samples at 2.93/fb with the BESIII detector model, applies the BESIII 2017
selection, fits the M_ll spectra with polynomials (order 4 as in the paper, and order 6 as
chosen from the spurious-signal study of validation/stats), shows the residuals as in the
paper's Fig. 2 and compares the expected epsilon limit with the published range.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from isrsim.config import bundled_card
from isrsim.detector import load_detector
from isrsim.stats import bin_containment
from isrsim.workflows._common import read_candidate_tables
from isrsim.workflows.limit import analyse_candidates
from isrsim.workflows.project import background_candidates

OUT = Path(__file__).resolve().parent
LUMI = 2.93e6  # nb^-1
# Published: "upper limits on the mixing parameter epsilon between 1e-3 and 1e-4" over
# 1.5-3.4 GeV (arXiv:1705.04265, conclusion; seeds/000_317a4439d15978e4.txt).
PUB_LO, PUB_HI = 1e-4, 1e-3
N_TOYS = 100


def _samples(cache: Path):
    card = bundled_card("project_besiii")
    det = load_detector("besiii")
    paths, infos = [], []
    for name, bkg in card["project"]["backgrounds"].items():
        b = dict(bkg, process=name)
        b["params"] = dict(b.get("params", {}), mass_range=[1.4, 3.5])
        p, info = background_candidates(b, det, selection="besiii2017", seed=2017,
                                        mc_luminosity_invnb=LUMI, cache_dir=cache, progress=True)
        paths.append(p)
        infos.append(info)
    return paths, infos


def _spectra_plot(res4, res6, path):
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1]})
    for k, ch in enumerate(res6.channels):
        h = res6.hists[ch]
        f6, f4 = res6.fits[ch], res4.fits[ch]
        ax, rx = axes[0, k], axes[1, k]
        keep = h.mask
        ax.errorbar(h.centers[keep], h.counts[keep], yerr=np.sqrt(h.variances[keep]), fmt=".",
                    ms=2, color="k", label=f"isrsim pseudo-data ({ch})")
        ax.plot(h.centers, f4.expected(), "C0-", lw=1, label=f"order 4: chi2/ndf = {f4.chi2:.0f}/{f4.ndf}")
        ax.plot(h.centers, f6.expected(), "C3--", lw=1, label=f"order 6: chi2/ndf = {f6.chi2:.0f}/{f6.ndf}")
        ax.axvspan(2.95, 3.20, color="0.85")
        ax.set_ylabel("events / 10 MeV")
        sub = r"\mu\mu" if ch == "mumu" else "ee"
        ax.set_title(r"BESIII 2.93 fb$^{-1}$, $M_{" + sub + "}$ after selection")
        ax.legend(fontsize=7)
        rx.plot(h.centers[keep], f4.pulls()[keep], "C0.", ms=2, label="order 4")
        rx.plot(h.centers[keep], f6.pulls()[keep], "C3.", ms=2, label="order 6")
        rx.axhline(0, color="0.5", lw=0.8)
        rx.set_ylabel("pull")
        rx.set_xlabel(r"$M_{\ell\ell}$ [GeV]")
        rx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _residual_plot(res4, res6, path):
    """Fig. 2 of the paper: sum over channels of (data - polynomial), with the in-bin 90 % CL
    yield limit (total-yield limit x containment of the +-5 MeV bin)."""
    fig, axes = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for ax, res, lab in ((axes[0], res4, "4th order (as in the paper)"), (axes[1], res6, "6th order (isrsim choice)")):
        h0 = res.hists[res.channels[0]]
        resid = sum(res.fits[c].residuals() for c in res.channels)
        err = np.sqrt(sum(res.hists[c].variances for c in res.channels))
        keep = h0.mask
        ax.errorbar(h0.centers[keep], resid[keep], yerr=err[keep], fmt=".", ms=2, color="k",
                    label="data - fit (mumu + ee)")
        f = bin_containment(res.sigma_m)  # (n_mass, n_chan)
        inbin = np.sum(res.yield_ul * f, axis=1)
        gap = np.flatnonzero(np.diff(res.mass) > 0.015) + 1  # no line across the J/psi window
        ax.step(np.insert(res.mass, gap, np.nan), np.insert(inbin, gap, np.nan), where="mid",
                color="C3", label="90% CL in-bin limit")
        ax.axhline(0, color="0.5", lw=0.8)
        ax.axvspan(2.95, 3.20, color="0.85")
        ax.set_ylabel("events / 10 MeV")
        ax.set_title(lab, fontsize=9)
        ax.legend(fontsize=8)
    axes[1].set_xlabel(r"$M_{\ell\ell}$ [GeV]")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _limit_plot(res4, res6, path):
    fig, ax = plt.subplots(figsize=(8, 5))
    b = res6.bands
    ax.fill_between(res6.mass, b[0], b[4], color="#ffdd44", label=r"expected $\pm2\sigma$ (order 6)")
    ax.fill_between(res6.mass, b[1], b[3], color="#44bb44", label=r"expected $\pm1\sigma$ (order 6)")
    ax.plot(res6.mass, b[2], "k--", lw=1, label="expected median (order 6)")
    ax.plot(res4.mass, res4.median, "C0:", lw=1.2, label="expected median (order 4)")
    ax.plot(res6.mass, res6.epsilon_obs, "k-", lw=0.8, label="isrsim pseudo-data, 90% CL (order 6)")
    ax.axhspan(PUB_LO, PUB_HI, color="C3", alpha=0.10, label="published range 1e-4 - 1e-3 (BESIII 2017)")
    ax.axhline(PUB_LO / 2, color="C3", ls="-.", lw=0.8, label="factor-2 acceptance envelope")
    ax.axhline(PUB_HI * 2, color="C3", ls="-.", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylim(3e-5, 5e-3)
    ax.set_xlabel(r"$m_{A'}$ [GeV]")
    ax.set_ylabel(r"$\varepsilon$ upper limit (90% CL)")
    ax.set_title(r"BESIII 2.93 fb$^{-1}$: isrsim expected limit vs published range")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    t0 = time.perf_counter()
    cache = Path(os.environ.get("ISRSIM_CACHE") or tempfile.mkdtemp(prefix="isrsim-besiii-"))
    paths, infos = _samples(cache)
    t_gen = time.perf_counter() - t0
    cands = read_candidate_tables(paths, luminosity_invnb=LUMI, channels=["mumu", "ee"])
    common = dict(mass_range=(1.5, 3.4), step=0.010, bin_width=0.010, n_toys=N_TOYS, seed=2017,
                  mask_windows=[(2.95, 3.20)], norm_unc=0.05, res_unc=0.02)
    res6 = analyse_candidates(cands, order=6, **common)
    res4 = analyse_candidates(cands, order=4, **common)
    res6_rolke = analyse_candidates(cands, order=6, convention="rolke_chi2",
                                    **dict(common, n_toys=0))
    _spectra_plot(res4, res6, OUT / "spectra_fits.png")
    _residual_plot(res4, res6, OUT / "residuals_fig2.png")
    _limit_plot(res4, res6, OUT / "epsilon_limit.png")

    def inside(x):
        return bool(np.all((x >= PUB_LO / 2) & (x <= PUB_HI * 2)))

    def strictly(x):
        return bool(np.all((x >= PUB_LO) & (x <= PUB_HI)))

    def max_abs_residual(res):
        resid = sum(res.fits[c].residuals() for c in res.channels)
        return float(np.max(np.abs(resid[res.hists[res.channels[0]].mask])))

    med6, med4 = res6.median, res4.median
    rows = []
    for m0 in (1.5, 2.0, 2.5, 2.9, 3.25, 3.4):
        i = int(np.argmin(np.abs(res6.mass - m0)))
        rows.append(f"| {res6.mass[i]:.3f} | {1e3 * res6.sigma_m[i, 0]:.1f} / {1e3 * res6.sigma_m[i, 1]:.1f} | "
                    f"{res6.n_qed_bin[i, 0]:.0f} / {res6.n_qed_bin[i, 1]:.0f} | {med4[i]:.2e} | {med6[i]:.2e} | "
                    f"{res6.epsilon_obs[i]:.2e} | {res6_rolke.epsilon_obs[i]:.2e} |")
    fits = "\n".join(
        f"| {c} | {res4.fits[c].chi2:.1f}/{res4.fits[c].ndf} (p = {res4.fits[c].pvalue:.2g}) | "
        f"{res6.fits[c].chi2:.1f}/{res6.fits[c].ndf} (p = {res6.fits[c].pvalue:.2g}) | "
        f"{int(res6.hists[c].counts[res6.hists[c].mask].sum())} |" for c in res6.channels)
    samples = "\n".join(f"| {i['process']} | {i['n_events']} | {i['cross_section_nb']:.4g} | "
                        f"{i['n_candidates']} |" for i in infos)
    ratio_hi = float(np.max(med6 / PUB_HI))
    ratio_lo = float(np.min(med6 / PUB_LO))
    text = f"""# BESIII 2017 dark-photon search reproduced with isrsim (2.93/fb)

Produced by `python validation/besiii/make_besiii.py` ({time.perf_counter() - t0:.0f} s on this machine,
of which {t_gen:.0f} s event generation + simulation + selection; the candidate tables are cached in
`$ISRSIM_CACHE` if set). Reference: BESIII, arXiv:1705.04265 (text in
`shared/seeds/000_317a4439d15978e4.txt`); physics.md sections 6.2, 7.1 and 10.

## Samples (BESIII detector model, BESIII 2017 selection, untagged photon cut 0.15 rad at generation)

| process | events generated (N ~ Poisson(sigma L), L = 2.93/fb) | sigma in the generation cuts [nb] | candidates (all channels) |
|---|---|---|---|
{samples}

The pseudo-data are the MC samples themselves at the paper's luminosity (one Poisson realisation).
isrsim's e e gamma is the s-channel (annihilation) process only, so no Bhabha correction applies.

## Spectra and background fits (spectra_fits.png, residuals_fig2.png)

1.5-3.4 GeV, 10 MeV bins, J/psi window 2.95-3.20 GeV excluded (as in the paper).

| channel | order 4 (paper) chi2/ndf | order 6 (isrsim) chi2/ndf | events in fit |
|---|---|---|---|
{fits}

Even order 6 leaves chi2/ndf = {res6.fits['mumu'].chi2:.0f}/{res6.fits['mumu'].ndf} in mu mu: the residuals show a
broad excess around 1.75-1.9 GeV from pi pi gamma events with both pions passing the muon
selection (the pion form factor's rho(1700) region); the paper subtracts this ~3 % background with
a PHOKHARA sample, isrsim's analysis does not (yet), so it is absorbed by the fit and the limit
there is weaker. The 4th-order polynomial does not describe the isrsim spectra at this statistics (the
spurious-signal study in validation/stats finds up to ~3 sigma_S fake signals below the J/psi and
~8 sigma_S above it for order 4, < 0.65 sigma_S for order 6); isrsim therefore uses order 6
(`cards/project_besiii.toml`), and the order-4 result is shown for comparison. `residuals_fig2.png`
is the analogue of the paper's Fig. 2: the sum over mu mu and e e of (data - polynomial) with the
90% CL in-bin limit (total-yield limit x Gaussian containment of the +-5 MeV bin). The paper's
Fig. 2 axis spans +-2000 events / 10 MeV; here the largest |data - fit| is
{max_abs_residual(res4):.0f} (order 4) and {max_abs_residual(res6):.0f} (order 6) events / 10 MeV.

## epsilon limit (epsilon_limit.png)

Full-shape Gaussian signal with sigma(m) fitted from the candidates' truth (isrsim's BESIII model
gives {1e3 * res6.sigma_m[0, 0]:.1f} -> {1e3 * res6.sigma_m[-1, 0]:.1f} MeV for mu mu; the paper quotes 5-12 MeV),
N_f from `isrsim.physics.darkphoton.n_f`, mu mu and e e combined at likelihood level (common
eps^2), 5 % normalisation and 2 % resolution systematics, q~_mu one-sided 90% CL
(`qtilde_asymptotic`), {N_TOYS} background-only toys for the bands.

| m [GeV] | sigma_m mumu/ee [MeV] | N_QED(bin) mumu/ee | expected median, order 4 | expected median, order 6 | pseudo-data, order 6 | pseudo-data, order 6, Rolke chi2_1 |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

- expected median (order 6): {med6.min():.2e} - {med6.max():.2e}; order 4: {np.nanmin(med4):.2e} - {np.nanmax(med4):.2e}
- pseudo-data limit (order 6): {res6.epsilon_obs.min():.2e} - {res6.epsilon_obs.max():.2e}; max local Z = {np.nanmax(res6.z_local):.2f}, global p (toys) = {res6.global_p:.2f}

### Level comparison with the published limit (a plausibility range, not a test of the curve)

The published curve (Fig. 3 of the paper) is not stored in the repository and we did not digitise it;
the paper's text states the observed limit lies "between 1e-3 and 1e-4" over 1.5-3.4 GeV. The paper
gives no other number for the limit curve (the Fig. 2 scale only bounds the in-bin limit below
~2000 events / 10 MeV). The comparison is therefore: the isrsim expected median must lie inside the
published range widened by a factor 2 on each side, [5e-5, 2e-3], at every mass hypothesis (165
hypotheses, 10 MeV step, J/psi window excluded). The factor 2 is a judgement of how far a toy
detector model may sit from the real analysis, not a spread derived from either; the
check is a plausibility range for the level, not an agreement test, and it compares isrsim's
*expected* median with the paper's *observed* limit.

- order 6 (isrsim choice): largest median / 1e-3 = {ratio_hi:.2f}, smallest median / 1e-4 = {ratio_lo:.2f}
  -> all medians in [5e-5, 2e-3]: **{'yes' if inside(med6) else 'no'}**; strictly inside the
  published [1e-4, 1e-3]: **{'yes' if strictly(med6) else 'no'}**; pseudo-data limit strictly
  inside it: **{'yes' if strictly(res6.epsilon_obs) else 'no'}**
- order 4 (paper's choice): all medians in [5e-5, 2e-3]: **{'yes' if inside(med4) else 'no'}**

A digitised Fig. 3 would be needed for a point-by-point comparison of the curve. Differences
expected from the model: isrsim's resolution is ~35 % better than the paper's 5-12 MeV
(detector model; a narrower signal gives a lower limit by ~sqrt(ratio)), no FSR and no
Bhabha/continuum backgrounds.
"""
    (OUT / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
