"""Validation of the beam-energy spread: the per-event sqrt(s') the generators draw, and the 1C
kinematic fit of simulated events with and without the beam term in its covariance.

Run: ``python validation/beam/make_beam.py`` (writes PNGs + README.md next to this file).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

from isrsim.constants import M_MU
from isrsim.detector import load_detector, simulate
from isrsim.processes import make_process
from isrsim.reco.kinfit import fit_1c_missing_photon
from isrsim.runner import apply_primary_vertex

OUT = Path(__file__).resolve().parent
DETECTORS = ("besiii", "belle2")
N_EVENTS = 200_000


def primary_sum(truth):
    tot = np.zeros((truth.n, 4))
    for j in range(truth.pdg.shape[1]):
        sel = (j < truth.npart) & (truth.parent[:, j] < 0)
        tot[sel] += truth.p4[sel, j]
    return tot


def sample(name: str, seed: int):
    det = load_detector(name)
    proc = make_process("isr_mumu", det.beam, mass_range=[0.5, 0.9 * det.beam.sqrt_s])
    rng = np.random.default_rng(seed)
    truth, _ = proc.sample(rng, N_EVENTS)
    apply_primary_vertex(truth, det.beam, rng)
    reco = simulate(truth, det, rng)
    return det, truth, reco


def fit_chi2(det, reco, truth, cov_beam):
    """1C chi2 of events with both muons tracked (the ISR photon is the missing particle)."""
    two = (reco.ntrk == 2) & (reco.charge[:, 0] + reco.charge[:, 1] == 0)
    j = reco.trk_truth[:, :2]
    both_mu = two & (np.abs(np.take_along_axis(truth.pdg, np.maximum(j, 0), axis=1)) == 13).all(axis=1)
    rows = np.flatnonzero(both_mu)
    f = fit_1c_missing_photon(reco.helix[rows, 0], reco.cov[rows, 0], reco.helix[rows, 1],
                              reco.cov[rows, 1], bz=det.bz_T, p4_beam=det.beam.p4_total_lab(),
                              mass=M_MU, cov_beam=cov_beam)
    return f.chi2[f.converged]


#: mean of chi2(1) below 10, the reference of the tables and the plot
REF_MEAN = stats.chi2.expect(lambda x: x, args=(1,), ub=10) / stats.chi2.cdf(10, 1)


def main() -> None:
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    rows_md = []
    fit_md = []
    for k, name in enumerate(DETECTORS):
        det, truth, reco = sample(name, 17 + k)
        beam = det.beam
        tot = primary_sum(truth)
        w = np.sqrt(tot[:, 3] ** 2 - np.sum(tot[:, :3] ** 2, axis=1))
        dw_mev = 1e3 * (w - beam.sqrt_s)
        sw = 1e3 * beam.sqrt_s_spread_GeV
        n = dw_mev.size
        # each beam's energy from E = E- + E+ and pz = (p- - p+) cos a (m_e/E ~ 1e-4 neglected)
        ca = math.cos(beam.crossing_half_angle_rad)
        e_beams = (0.5 * (tot[:, 3] + tot[:, 2] / ca), 0.5 * (tot[:, 3] - tot[:, 2] / ca))
        per_beam = " | ".join(
            f"{1e4 * r:.3f} / {1e4 * np.std(e / e0 - 1.0):.3f} +- {1e4 * r / math.sqrt(2 * n):.3f}"
            for r, e, e0 in zip(beam.energy_spreads_rel, e_beams, (beam.e_minus_GeV, beam.e_plus_GeV)))
        rows_md.append(f"| {name} | {beam.sqrt_s:.4f} | {sw:.2f} | {dw_mev.mean():+.3f} +- "
                       f"{dw_mev.std() / math.sqrt(n):.3f} | {dw_mev.std():.3f} +- "
                       f"{dw_mev.std() / math.sqrt(2 * n):.3f} | {per_beam} |")
        ax = axes[0, k]
        h, e, _ = ax.hist(dw_mev, bins=80, range=(-5 * sw, 5 * sw), histtype="step", lw=1.5,
                          label=f"generated (isr_mumu, {n} events)")
        xc = 0.5 * (e[1:] + e[:-1])
        ax.plot(xc, n * (e[1] - e[0]) * stats.norm.pdf(xc, 0.0, sw), "r--",
                label=f"Gaussian, sigma = {sw:.2f} MeV (detector file)")
        ax.set_xlabel("sqrt(s') - sqrt(s) of the event [MeV]")
        ax.set_ylabel("events")
        ax.set_title(f"{name}: per-event CM energy")
        ax.legend(fontsize=8)
        ax = axes[1, k]
        bins = np.linspace(0, 10, 51)
        for cov, lab, style in ((det.beam.p4_covariance_lab(), "with the beam term", "-"),
                                (None, "exact beam assumed", "--")):
            c2 = fit_chi2(det, reco, truth, cov)
            ax.hist(np.clip(c2, 0, 9.999), bins=bins, histtype="step", ls=style, lw=1.5,
                    label=f"{lab}: <chi2 | < 10> = {c2[c2 < 10].mean():.3f}")
            frac = float(np.mean(stats.chi2.sf(c2, 1) < 0.05))
            fit_md.append(f"| {name} | {lab} | {c2.size} | {c2[c2 < 10].mean():.3f} | "
                          f"{frac:.4f} +- {math.sqrt(0.05 * 0.95 / c2.size):.4f} |")
        ax.plot(0.5 * (bins[1:] + bins[:-1]), c2.size * np.diff(stats.chi2.cdf(bins, 1)), "k:",
                label=f"chi2(1): <chi2 | < 10> = {REF_MEAN:.3f}")
        ax.set_yscale("log")
        ax.set_xlabel("1C fit chi2 (missing ISR photon), simulated mu mu gamma")
        ax.set_ylabel("events")
        ax.set_title(f"{name}: 1C fit, both muons tracked")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "beam_spread.png", dpi=110)
    plt.close(fig)
    md = [
        "# Beam-energy spread",
        "",
        "Generated by `validation/beam/make_beam.py`. Each event is generated with its own beams: "
        "E(1 + r xi) per beam, xi standard normal truncated at 6 "
        "(`isrsim.processes._kin.event_beam`), r = sigma_E/E of that beam: BESIII's file gives "
        "sigma_W (equal r = sqrt(2) sigma_W/W), Belle II's the two beams' spreads of the basf2 "
        "preset (HER 5.13 MeV, LER 2.375 MeV). The kinematic fits take the resulting beam "
        "4-vector covariance (`Beam.p4_covariance_lab`).",
        "",
        "![beam spread](beam_spread.png)",
        "",
        "Per-event sqrt(s') and beam energies from the summed final state of generated isr_mumu "
        "events (errors: statistical; the beam energies solved from E and pz):",
        "",
        "| detector | sqrt(s) [GeV] | sigma_W in the file [MeV] | mean shift [MeV] "
        "| measured sigma_W [MeV] | e- sigma_E/E x 1e4: file / measured | e+ sigma_E/E x 1e4: file / measured |",
        "|---|---|---|---|---|---|---|",
        *rows_md,
        "",
        "1C fit (missing massless photon) of simulated mu+mu- gamma events, both muons tracked; "
        f"for chi2(1) the mean below 10 is {REF_MEAN:.3f} and 5 % of the events have "
        "P(chi2) < 0.05:",
        "",
        "| detector | fit | events | mean chi2 below 10 | fraction P(chi2) < 0.05 |",
        "|---|---|---|---|---|",
        *fit_md,
        "",
    ]
    (OUT / "README.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
