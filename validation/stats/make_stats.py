"""Validation of isrsim.stats: spurious signal, coverage, an example BESIII-like limit plot.

Run: python validation/stats/make_stats.py  (writes PNGs and README.md next to this file)
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy.interpolate import CubicSpline

from isrsim.stats import (
    JPSI_WINDOW,
    Channel,
    Histogram,
    chebyshev_bin_basis,
    fit_background,
    gaussian_shape,
    pseudo_experiments,
    scan_epsilon,
    spurious_signal,
    upper_limit,
    window_mask,
)
from isrsim.stats.epsilon import epsilon_channels
from isrsim.stats.plotting import plot_epsilon_limits, plot_residuals

OUT = Path(__file__).resolve().parent
# physics.md section 3: dsigma/dM(mu mu gamma, W_KF) at 3.773 GeV, nb/GeV
M_TAB = np.array([1.5, 2.0, 2.5, 3.0, 3.4])
DSDM_TAB = np.array([0.4106, 0.3744, 0.4165, 0.6007, 1.163])
N_F = 4.2  # physics.md section 8: N_f ~ 4.1-4.4 over 1.5-3.4 GeV (constant stand-in)


def expected_counts(edges, per_bin_at_2gev=1.1e4):
    spline = CubicSpline(M_TAB, np.log(DSDM_TAB))
    fine = np.linspace(edges[0], edges[-1], 20 * (edges.size - 1) + 1)
    dens = np.exp(spline(fine))
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(fine))])
    return np.diff(np.interp(edges, fine, cum)) * per_bin_at_2gev / (np.exp(spline(2.0)) * 0.010)


def sigma_m(m):
    return 0.005 + 0.007 * (m - 1.5) / 1.9


def hist(edges, counts, name):
    return Histogram(edges, counts, counts.copy(), window_mask(edges, [JPSI_WINDOW]), False, name,
                     (JPSI_WINDOW,))


def spurious(lines) -> dict[int, float]:
    edges = np.linspace(1.5, 3.4, 191)
    mu = expected_counts(edges)
    h = hist(edges, mu.copy(), "asimov")
    masses = np.concatenate([np.arange(1.52, 2.945, 0.01), np.arange(3.21, 3.395, 0.01)])
    fig, ax = plt.subplots(figsize=(7, 4))
    lines.append("| order | max abs(S_spur/sigma_S), 1.5-2.95 GeV | max, 3.2-3.4 GeV | bkg chi2/ndf (Asimov) |")
    lines.append("|---|---|---|---|")
    worst = {}
    for order in (4, 5, 6):
        ss = spurious_signal(Channel(h, sigma_m, order=order), masses)
        fit = fit_background(h, order)
        lo = masses < 2.95
        worst[order] = float(np.max(np.abs(ss.ratio)))
        lines.append(f"| {order} | {np.max(np.abs(ss.ratio[lo])):.2f} | {np.max(np.abs(ss.ratio[~lo])):.2f} "
                     f"| {fit.chi2:.1f}/{fit.ndf} |")
        ax.plot(masses[lo], ss.ratio[lo], ".-", ms=2, color=f"C{order - 4}", label=f"order {order}")
        ax.plot(masses[~lo], ss.ratio[~lo], ".-", ms=2, color=f"C{order - 4}")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlabel("mass hypothesis [GeV]")
    ax.set_ylabel(r"spurious signal / $\sigma_S$")
    ax.set_title("Asimov BESIII-like spectrum (1.1e4 / 10 MeV at 2 GeV), J/psi masked")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "spurious_signal.png", dpi=120)
    plt.close(fig)
    return worst


def coverage(lines, n_toys=1000) -> dict[tuple[float, str], float]:
    rng = np.random.default_rng(7)
    edges = np.linspace(1.7, 2.3, 61)
    b = chebyshev_bin_basis(edges, 2, 1.7, 2.3) @ np.array([1000.0, 150.0, 40.0])
    lines.append("| S_true [events] | S/sigma_S | convention | promised | measured |")
    lines.append("|---|---|---|---|---|")
    measured = {}
    for s_true in (30.0, 60.0, 150.0):
        mu = b + s_true * gaussian_shape(edges[:-1], edges[1:], 2.0, 0.008)
        cov = {"qtilde_asymptotic": 0, "rolke_chi2": 0, "cls_asymptotic": 0}
        errs = []
        for _ in range(n_toys):
            n = rng.poisson(mu).astype(float)
            ch = Channel(Histogram(edges, n, n.copy(), np.ones(60, bool), False, "toy", ()), 0.008,
                         norm_unc=0.05, res_unc=0.05, order=2)
            for conv in cov:
                ul = upper_limit(ch, 2.0, convention=conv)
                cov[conv] += ul.upper_limit >= s_true
            errs.append(ul.poi_hat_error)
        s = s_true / np.mean(errs)
        for conv, k in cov.items():
            r = k / n_toys
            promise = {"qtilde_asymptotic": "0.90", "rolke_chi2": ">= 0.95", "cls_asymptotic": ">= 0.90"}[conv]
            lines.append(f"| {s_true:.0f} | {s:.2f} | {conv} | {promise} | {r:.3f} +- {np.sqrt(r * (1 - r) / n_toys):.3f} |")
            measured[(s, conv)] = r
    return measured


def example(lines):
    rng = np.random.default_rng(2017)
    edges = np.linspace(1.5, 3.4, 191)
    mu = expected_counts(edges)
    chans = []
    for name, scale in (("mumu", 1.0), ("ee", 0.8)):
        n = rng.poisson(mu * scale).astype(float)
        chans.append(Channel(hist(edges, n, name), sigma_m, norm_unc=0.05, res_unc=0.01, order=6))
    masses = np.concatenate([np.arange(1.52, 2.94, 0.01), np.arange(3.22, 3.39, 0.01)])
    t0 = time.perf_counter()
    obs = scan_epsilon(chans, masses, n_f=N_F, bhabha_correction={"ee": 0.95})
    t_scan = time.perf_counter() - t0
    eps_chans = epsilon_channels(chans, n_f=N_F, bhabha_correction={"ee": 0.95})
    t0 = time.perf_counter()
    ex = pseudo_experiments(eps_chans, masses, n_toys=100, rng=rng)
    t_toys = time.perf_counter() - t0
    fig, ax = plt.subplots(figsize=(7, 4.5))
    seg = [masses < 2.95, masses > 3.2]
    for k, sel in enumerate(seg):
        plot_epsilon_limits(masses[sel], obs.epsilon_ul[sel], expected_bands=np.sqrt(ex.bands[:, sel]),
                            ax=ax, label="observed 90% CL" if k == 0 else "_")
    handles, labels = ax.get_legend_handles_labels()
    keep = {lab: h for h, lab in zip(handles, labels) if not lab.startswith("_")}
    ax.legend(keep.values(), keep.keys(), fontsize=8)
    ax.set_title(r"toy BESIII-like $ee+\mu\mu$, q~$_\mu$ 90% CL, order-6 background")
    fig.tight_layout()
    fig.savefig(OUT / "epsilon_limits.png", dpi=120)
    plt.close(fig)
    fit = fit_background(chans[0].hist, 6)
    ax = plot_residuals(fit, limit_mass=masses, limit_yield=obs.yield_ul[:, 0])
    ax.set_title(f"mumu: data - order-6 fit, chi2/ndf = {fit.chi2:.0f}/{fit.ndf}")
    ax.figure.tight_layout()
    ax.figure.savefig(OUT / "residuals_mumu.png", dpi=120)
    plt.close(ax.figure)
    zmax = float(np.max(obs.limits.z_local))
    from isrsim.stats import global_significance_toys, gross_vitells

    g_t = global_significance_toys(zmax, ex.z_max)
    g_gv = gross_vitells(zmax, ex.z_local[:10], u0=0.5)
    lines += [
        f"- scan of {masses.size} masses x 2 channels (combined eps^2, full-shape, profiled "
        f"order-6 polynomials, 2 nuisances): {t_scan:.2f} s; 100 background-only toy scans: {t_toys:.1f} s",
        f"- observed eps_UL: {obs.epsilon_ul.min():.2e} - {obs.epsilon_ul.max():.2e} "
        f"(physics.md 6.2 expects ~1e-3 sensitivity)",
        f"- median expected eps_UL at 2.0 GeV: {np.sqrt(ex.median[np.argmin(abs(masses - 2.0))]):.2e}",
        f"- max local Z = {zmax:.2f}; global p (toys) = {g_t.p_global:.2f} +- {g_t.p_global_error:.2f}; "
        f"Gross-Vitells p = {g_gv.p_global:.2f} (<N_up(0.5)> = {g_gv.n_up:.1f})",
        f"- fraction of masses with observed inside the +-2 sigma band: "
        f"{np.mean((obs.epsilon2_ul >= ex.bands[0]) & (obs.epsilon2_ul <= ex.bands[4])):.2f} (expect ~0.95)",
    ]


def main():
    lines = ["# isrsim.stats validation", "", "Produced by `python validation/stats/make_stats.py`.", "",
             "## Spurious signal of the polynomial background (spurious_signal.png)", "",
             "Asimov (no fluctuation) spectrum with the physics.md section 3 mu mu gamma shape "
             "(log-cubic spline through the table), 1.1e4 events per 10 MeV at 2 GeV, sigma(m) 5 -> 12 MeV, "
             "full-shape signal fit at each mass.", ""]
    worst = spurious(lines)
    lines += ["", "The 4th-order polynomial of BESIII 2017 is not adequate at these statistics over the "
              "full 1.5-3.4 GeV range with this shape (steep rise towards 3.4 GeV); order 6 keeps the "
              f"spurious signal at or below {worst[6]:.2f} sigma_S. Choose the order per channel with this "
              "diagnostic.", "",
              "## Coverage (1000 toys per row; 60 bins, quadratic background ~1000/bin, sigma = 8 MeV, "
              "5 % norm. and res. systematics)", ""]
    cov = coverage(lines)
    q = sorted((s, r) for (s, c), r in cov.items() if c == "qtilde_asymptotic")
    lines += ["", "q~_mu covers at its nominal 90 % once the signal is resolved ("
              + ", ".join(f"{r:.3f} at S/sigma_S = {s:.1f}" for s, r in q[1:])
              + f") and over-covers for small S ({q[0][1]:.3f} at S/sigma_S = {q[0][0]:.1f}, where "
              "mu_hat is often clipped at 0); the chi2_1 = 2.7055 "
              "rule covers at >= 95 % one-sided; asymptotic CLs over-covers for small signals by "
              "construction.", "",
              "## Example: toy BESIII-like spectrum (epsilon_limits.png, residuals_mumu.png)", "",
              "Two channels (mumu, ee at 0.8x the rate), Bhabha correction 0.95 for ee, N_f = 4.2 "
              "held constant in this toy (physics.md 8: 4.1-4.4 over 1.5-3.4 GeV; the projection "
              "workflow uses the mass-dependent isrsim.physics.darkphoton.n_f).", ""]
    example(lines)
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
