"""Validation plots for isrsim.physics.rratio and isrsim.physics.darkphoton.

Writes into this directory:
* ``r_ratio.png``: R(sqrt(s)) for 0.3-11 GeV (log y) with and without the narrow resonances, the
  PDG compilation checkpoints of shared/physics.md 6.5 and the 2.2 table overlaid;
* ``branching_ratios.png``: A' branching ratios vs mass (BESIII 2017 convention);
* ``nf_ctau.png``: N_f = Gamma_tot/Gamma_ee and c tau at eps = 1e-3 vs mass;
* ``README.md``: the summary with the numbers printed below.

Run: ``python validation/darkphoton/make_darkphoton.py`` (imports only isrsim, numpy, matplotlib).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from isrsim.physics import darkphoton as dp  # noqa: E402
from isrsim.physics import rratio  # noqa: E402

OUT = Path(__file__).resolve().parent

# shared/physics.md 6.5 (PDG compilation, nearest points) and 2.2 table "R (PDG, all)"
PDG_6_5 = [(0.5, 0.474), (1.0, 1.32), (1.5, 2.10), (2.0, 2.18), (2.5, 2.39), (3.0, 2.21), (3.4, 2.38),
           (5.0, 3.42), (10.0, 3.68), (0.98, 0.99), (2.543, 2.22), (3.418, 2.19)]
PDG_2_2 = [(0.40, 0.195), (0.60, 1.31), (0.70, 4.8), (0.775, 12.0), (0.85, 3.2), (0.95, 1.16)]
CHECKPOINTS = [(0.5, 0.474), (1.0, 1.32), (1.5, 2.10), (2.0, 2.18), (2.5, 2.39), (3.0, 2.21), (3.4, 2.38),
               (5.0, 3.42), (10.0, 3.68)]
#: neighbours of the isolated high points at 2.5 and 3.4 GeV (physics.md 6.5)
NEIGHBOURS = [(2.543, 2.22), (3.418, 2.19)]
#: the section of README.md written by make_decay_length.py (kept when this script rewrites it)
BEGIN, END = "<!-- make_decay_length:begin -->", "<!-- make_decay_length:end -->"


def plot_r() -> list[str]:
    w = np.concatenate([np.linspace(0.3, 11.0, 40000),
                        *[np.linspace(m - 30 * g, m + 30 * g, 2001) for _, m, g, _, _ in rratio.NARROW_RESONANCES]])
    w = np.sort(w)
    fig, ax = plt.subplots(figsize=(9, 5))
    ax.plot(w, rratio.r_ratio(w), lw=0.8, color="C0", label="isrsim R (with narrow J/psi, psi(2S), Upsilon)")
    ax.plot(w, rratio.r_ratio(w, include_narrow=False), lw=1.2, color="C1", label="isrsim R, continuum + broad")
    x, y = zip(*PDG_6_5)
    ax.plot(x, y, "ko", ms=5, label="PDG compilation points (physics.md 6.5)")
    x, y = zip(*PDG_2_2)
    ax.plot(x, y, "ks", mfc="none", ms=6, label="PDG R (physics.md 2.2 table)")
    ax.set_yscale("log")
    ax.set_ylim(0.05, 2e4)
    ax.set_xlim(0.3, 11.0)
    ax.set_xlabel(r"$\sqrt{s}$ [GeV]")
    ax.set_ylabel("R")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("isrsim.physics.rratio.r_ratio")
    fig.tight_layout()
    fig.savefig(OUT / "r_ratio.png", dpi=120)
    plt.close(fig)
    rows = []
    nodes = {w for w, r in rratio.LOW_ENERGY_NODES if r == r}  # finite-valued interpolation nodes
    for wc, rc in CHECKPOINTS + NEIGHBOURS:
        r = float(rratio.r_ratio(wc))
        kind = "node of the interpolation (equal by construction)" if wc in nodes else "independent"
        rows.append(f"| {wc} | {rc} | {r:.3f} | {100 * (r / rc - 1):+.1f} % | {kind} |")
    return rows


def plot_brs() -> list[str]:
    m = np.geomspace(0.0011, 10.49, 6000)
    br = dp.branching_ratios(m)
    fig, ax = plt.subplots(figsize=(9, 5))
    for k, lab in (("ee", "e+e-"), ("mumu", "mu+mu-"), ("tautau", "tau+tau-"), ("hadrons", "hadrons")):
        ax.plot(m, br[k], label=lab)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("m(A') [GeV]")
    ax.set_ylabel("branching ratio")
    ax.set_title("A' branching ratios (Gamma_had = Gamma_mumu R(m), BESIII 2017 eq. 3)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "branching_ratios.png", dpi=120)
    plt.close(fig)

    fig, ax1 = plt.subplots(figsize=(9, 5))
    ax1.plot(m, dp.n_f(m), color="C0")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("m(A') [GeV]")
    ax1.set_ylabel(r"$N_f = \Gamma_{tot}/\Gamma_{ee}$", color="C0")
    ax2 = ax1.twinx()
    ax2.plot(m, dp.ctau_cm(m, 1e-3) * 1e4, color="C3")
    ax2.set_yscale("log")
    ax2.set_ylabel(r"$c\tau$ [$\mu$m] at $\epsilon = 10^{-3}$", color="C3")
    fig.tight_layout()
    fig.savefig(OUT / "nf_ctau.png", dpi=120)
    plt.close(fig)

    rows = []
    for mm in (0.017, 0.1, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.4, 5.0, 9.0):
        b = dp.branching_ratios(mm)
        rows.append(f"| {mm} | {float(rratio.r_ratio(mm)):.3f} | {dp.gamma_ee(mm, 1e-3) / 1e-6:.4e} | "
                    f"{dp.gamma_total(mm, 1e-3) / 1e-6:.4e} | {dp.n_f(mm):.3f} | {b['ee']:.3f} | {b['mumu']:.3f} | "
                    f"{b['tautau']:.3f} | {b['hadrons']:.3f} | {dp.ctau_cm(mm, 1e-3) * 1e4:.4g} |")
    return rows


def xsec_rows() -> list[str]:
    rows = []
    for w, masses in ((3.773, (0.017, 1.5, 3.0)), (10.58, (0.017, 1.0, 5.0))):
        for mm in masses:
            fl, ch = ("e", "ee") if mm < 0.2 else ("mu", "mumu")
            a = dp.sigma_aprime_gamma_nb(mm, 1e-3, w)
            br = dp.branching_ratios(mm)[ch]
            b = dp.sigma_aprime_gamma_isr_nb(mm, 1e-3, w, flavour=fl)
            a8 = dp.sigma_aprime_gamma_nb(mm, 1e-3, w, cos_theta_range=(-0.8, 0.8))
            rows.append(f"| {w} | {mm} | {a:.4g} | {a8:.3g} | {fl}{fl} | {a * br:.5g} | {b:.5g} | {b / (a * br) - 1:+.1e} |")
    return rows


def main() -> None:
    r_rows = plot_r()
    br_rows = plot_brs()
    x_rows = xsec_rows()
    text = f"""# Dark-photon physics and R(s) validation

Produced by `validation/darkphoton/make_darkphoton.py` (isrsim.physics.rratio, .darkphoton,
.formfactor). References: shared/physics.md 2.2, 6.1-6.5; BESIII 2017 (arXiv:1705.04265) eqs. 1-3.

## R(s)

![R(s)](r_ratio.png)

Model (details and sources in the `isrsim.physics.rratio` docstring): R_pipi from the GS form factor
below 0.40 GeV; PCHIP (in ln R) through PDG compilation points quoted in physics.md 2.2/6.5 for
0.40-2 GeV with the phi as a Breit-Wigner; pQCD above 2 GeV, 3 sum e_q^2 (1 + a + c2 a^2),
alpha_s(M_Z) = 0.1179, 3-loop running, open charm/beauty via v(3 - v^2)/2 at 2 m_D0 and 2 m_B;
psi(3770..4415), Upsilon(4S) and the narrow J/psi, psi(2S), Upsilon(1S-3S) as relativistic
Breit-Wigners ([U] parameters). R convention: ratio to the point-like massless mu mu cross section;
the A' hadronic width is Gamma_mumu R(m) (BESIII 2017).

PDG checkpoints (physics.md 6.5; acceptance 10 %). The checkpoints below 2 GeV are nodes of
the interpolation (`rratio.LOW_ENERGY_NODES`): their agreement is by construction, not a test.
The independent checks are the pQCD/resonance model from 2 GeV up:

| sqrt(s) [GeV] | R PDG | R isrsim | difference | kind |
|---|---|---|---|---|
{chr(10).join(r_rows)}

The 2.5 and 3.4 GeV points are isolated high points (physics.md 6.5: points scatter by +-5-10 %
above 2 GeV); their neighbours at 2.543 and 3.418 GeV are the last two rows.

## A' widths and branching ratios (eps = 1e-3)

![BRs](branching_ratios.png)

![N_f and c tau](nf_ctau.png)

| m [GeV] | R(m) | Gamma_ee/eps^2 [GeV] | Gamma_tot/eps^2 [GeV] | N_f | BR ee | BR mumu | BR tautau | BR had | c tau [um] |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(br_rows)}

Compare physics.md 6.3 (same formulas; its R at 2.0-3.4 GeV are the nearest PDG points, so N_f
there differs by up to 4.5 %): e.g. N_f(1.5) = 4.096, c tau(17 MeV, 1e-3) = 4.77 um.

## Production e+e- -> gamma A' (eps = 1e-3)

Route (a): tree level, physics.md (6.1), all decays, `sigma_aprime_gamma_nb`. Route (b): the
BESIII ISR relation (6.2) from the LO QED yield, `sigma_aprime_gamma_isr_nb`, which returns
sigma x BR(ll). They agree to the electron-mass factor (5e-6 at 17 MeV).

| sqrt(s) | m | sigma(a) full [nb] | sigma(a) abs(cos) < 0.8 [nb] | ll | sigma(a) x BR [nb] | sigma(b) [nb] | (b)/(a BR) - 1 |
|---|---|---|---|---|---|---|---|
{chr(10).join(x_rows)}

physics.md 6.1 quotes 3.08e-4, 3.75e-4, 1.17e-3 nb (3.773 GeV; 2.6e-5, 3.7e-5, 1.5e-4 with the
cut) and 4.39e-5, 4.43e-5, 5.94e-5 nb (10.58 GeV).
"""
    readme = OUT / "README.md"
    old = readme.read_text() if readme.exists() else ""
    if BEGIN in old and END in old:  # keep make_decay_length.py's section
        text += "\n" + old[old.index(BEGIN):old.index(END) + len(END)] + "\n"
    readme.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
