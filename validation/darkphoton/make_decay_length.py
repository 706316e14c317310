"""Validation of the displaced A' decays of the ``darkphoton`` process at Belle II.

A 17 MeV, eps = 1e-3 A' (c tau = 4.77 um, physics.md 6.3; X17 window of 6.4), A' -> e+e-,
generated with :class:`isrsim.processes.darkphoton.DarkPhoton` at the Belle II beam energies
and crossing angle (``load_detector("belle2").beam``), for two photon selections in the CM frame:
all photon angles, and a large-angle photon (20 deg < theta_gamma < 160 deg).

Expectation (independent of the vertex sampling): given the A' lab kinematics of event i, the lab
decay length is Exp(mu_i), mu_i = (beta gamma)_i c tau, and the transverse decay length
r_xy = l sin(theta_lab) is Exp(mu_i sin theta_i) (physics.md 6.3). The expected histogram is the
mixture sum_i of these exponentials over the kinematics of a *separate* sample (different seed),
scaled to the number of events; a Pearson chi2 over the bins with > 5 expected entries is quoted.

Writes ``decay_length.png`` and a section of ``README.md`` (between markers, replaced on rerun).
Run: ``python validation/darkphoton/make_decay_length.py`` (imports only isrsim, numpy, scipy,
matplotlib).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from isrsim.detector import load_detector  # noqa: E402
from isrsim.physics import darkphoton as dp  # noqa: E402
from isrsim.processes.darkphoton import DarkPhoton  # noqa: E402

OUT = Path(__file__).resolve().parent
BEGIN, END = "<!-- make_decay_length:begin -->", "<!-- make_decay_length:end -->"
MASS, EPS = 0.017, 1e-3
N_EVENTS = 1_000_000
N_REF = 1_000_000
SEED = 2024


def _flight(chunk):
    """Lab decay length, r_xy, and the kinematic means mu (for l) and mu sin(theta) (for r_xy).

    mu = (beta gamma) c tau with beta gamma = |p|/m from the A' four-momentum and c tau from
    ``isrsim.physics.darkphoton.ctau_cm`` (checked against physics.md 6.3 in the table above),
    not from the generator's own ``betagamma_lab``/``ctau_cm`` outputs."""
    v = chunk.vtx[:, 2]
    p4 = chunk.p4[:, 0]
    p = p4[:, :3]
    pabs = np.linalg.norm(p, axis=1)
    ell = np.linalg.norm(v, axis=1)
    rxy = np.hypot(v[:, 0], v[:, 1])
    sin_t = np.hypot(p[:, 0], p[:, 1]) / pabs
    mu = pabs / np.sqrt(p4[:, 3] ** 2 - pabs**2) * dp.ctau_cm(MASS, EPS)
    return ell, rxy, mu, mu * sin_t


def _expected(edges, means, n_scale):
    """Mixture prediction n_scale <P_k> with P_ik = P(edge_k < X < edge_k+1 | X ~ Exp(mean_i)),
    and its variance n_scale^2 var_i(P_ik)/N_ref from the finite reference sample."""
    exp = np.empty(edges.size - 1)
    var = np.empty(edges.size - 1)
    lo = -np.expm1(-edges[0] / means)
    for k in range(edges.size - 1):
        hi = -np.expm1(-edges[k + 1] / means)
        pk = hi - lo
        exp[k] = pk.mean() * n_scale
        var[k] = pk.var() * n_scale**2 / means.size
        lo = hi
    return exp, var


def _chi2(obs, exp, var_exp):
    """Pearson chi2 (bins with > 5 expected), variance = expected + reference-sample variance."""
    ok = exp > 5
    chi2 = float(np.sum((obs[ok] - exp[ok]) ** 2 / (exp[ok] + var_exp[ok])))
    ndf = int(ok.sum())
    return chi2, ndf, float(stats.chi2.sf(chi2, ndf))


def _speed(proc, n_blocks=50, block=10_000):
    """Events/s of DarkPhoton.sample in runner-sized blocks (one core, best of 3)."""
    best = math.inf
    for rep in range(3):
        t0 = time.perf_counter()
        for j in range(n_blocks):
            proc.sample(np.random.default_rng([SEED, 99, rep, j]), block)
        best = min(best, time.perf_counter() - t0)
    return n_blocks * block / best


def main() -> None:
    beam = load_detector("belle2").beam
    th = math.radians(20.0)
    samples = {
        "all photon angles": None,
        "20 deg < theta_gamma(CM) < 160 deg": {"mode": "tagged", "theta_min": th,
                                                "theta_max": math.pi - th},
    }
    results = {}
    speed = None
    for k, (label, cut) in enumerate(samples.items()):
        proc = DarkPhoton(beam, mass=MASS, epsilon=EPS, decay="ee", photon_cut=cut)
        proc.sample(np.random.default_rng(0), 1000)  # JIT warm-up
        if speed is None:
            speed = _speed(proc)
        chunk, st = proc.sample(np.random.default_rng([SEED, k, 0]), N_EVENTS)
        ref, _ = proc.sample(np.random.default_rng([SEED, k, 1]), N_REF)
        results[label] = (proc, st, _flight(chunk), _flight(ref))

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    rows = []
    colors = ["C0", "C1"]
    for (label, (proc, st, (ell, rxy, _, _), (_, _, mu_r, mus_r))), col in zip(results.items(), colors):
        n = ell.size
        # (a) r_xy, linear bins to 2 mm (log y)
        e_lin = np.linspace(0.0, 0.2, 81)
        # (b) r_xy, log bins (the all-angle sample sits at um scales)
        e_log = np.geomspace(1e-6, 1.0, 61)
        # (c) lab decay length, linear bins to 2 cm
        e_ell = np.linspace(0.0, 2.0, 81)
        stats_txt = []
        for ax, edges, x, means in ((axes[0], e_lin, rxy, mus_r), (axes[1], e_log, rxy, mus_r),
                                    (axes[2], e_ell, ell, mu_r)):
            obs, _ = np.histogram(x, edges)
            exp, var_exp = _expected(edges, means, n)
            ax.stairs(obs, edges * 10.0, color=col, label=f"{label}: isrsim")
            ax.stairs(exp, edges * 10.0, color="k", ls="--", lw=0.9)
            stats_txt.append(_chi2(obs, exp, var_exp))
        rows.append((label, st.sigma_nb, n, float(np.mean(proc.ctau)), float(np.mean(ell)),
                     float(np.mean(rxy)), float(np.median(rxy)), float(np.mean(rxy > 0.1)),
                     float(np.mean(rxy > 1.0)), stats_txt))
    axes[0].set(xlabel="r_xy of the A' decay vertex [mm]", ylabel="events / 25 um", yscale="log",
                title=f"Belle II, m = {MASS * 1e3:g} MeV, eps = {EPS:g}: transverse decay length")
    axes[1].set(xlabel="r_xy [mm]", ylabel="events / bin", xscale="log", yscale="log",
                title="r_xy, logarithmic bins")
    axes[2].set(xlabel="lab decay length l [mm]", ylabel="events / 0.25 mm", yscale="log",
                title="lab decay length (c tau = 4.77 um)")
    axes[0].plot([], [], "k--", lw=0.9, label="expectation: mixture of Exp(beta gamma c tau sin theta)")
    axes[1].plot([], [], "k--", lw=0.9, label="expectation")
    axes[2].plot([], [], "k--", lw=0.9, label="expectation: mixture of Exp(beta gamma c tau)")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT / "decay_length.png", dpi=110)
    plt.close(fig)

    ctau_um = dp.ctau_cm(MASS, EPS) * 1e4
    lines = [
        BEGIN,
        "## Displaced A' decays at Belle II (`make_decay_length.py`)",
        "",
        "![decay length](decay_length.png)",
        "",
        f"`DarkPhoton(load_detector(\"belle2\").beam, mass={MASS}, epsilon={EPS}, decay=\"ee\")`, "
        f"{N_EVENTS:,} unweighted events per sample, seed {SEED}; c tau = {ctau_um:.3f} um "
        "(physics.md 6.3: 4.77 um). Dashed: the expectation from the A' lab kinematics of an "
        f"independent {N_REF:,}-event sample, sum_i Exp(beta gamma_i c tau [sin theta_i]) "
        "(physics.md 6.3); chi2 over bins with > 5 expected events, variance = expected + the "
        "reference-sample variance of the prediction.",
        "",
        "| sample | sigma x BR [nb] | mean l [mm] | mean r_xy [mm] | median r_xy [mm] | "
        "r_xy > 1 mm | r_xy > 1 cm | chi2/ndf (p) r_xy lin | r_xy log | l |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, sig, _n, _ct, mell, mrxy, medr, f1, f10, chis in rows:
        cs = " | ".join(f"{c:.1f}/{d} ({p:.2f})" for c, d, p in chis)
        lines.append(f"| {label} | {sig:.4g} | {mell * 10:.3f} | {mrxy * 10:.4f} | {medr * 10:.4f} | "
                     f"{f1:.2e} | {f10:.1e} | {cs} |")
    lines += [
        "",
        "physics.md 6.3 quotes a mean decay length of 1.49 mm at the Belle II CM beta gamma (311) and",
        "notes a +-30 % spread from the lab boost: here the mean over all photon angles is "
        f"{rows[0][4] * 10:.2f} mm. Over all photon angles the A' mostly flies close to a beam",
        "direction, and the beams cross the solenoid axis at +-41.5 mrad, so r_xy is of order",
        f"0.04 l (median {rows[0][6] * 1e4:.0f} um) with a tail from large-angle A'. With a large-angle "
        "photon the A' is",
        "central and r_xy approaches the lab decay length (mean ~ l sin theta).",
        "",
        f"Generation speed (one core, unweighted, Belle II beams, all photon angles, blocks of "
        f"10,000 events as in the runner, best of 3): {speed / 1e6:.2f} M events/s "
        "(`DarkPhoton.sample`, one fused kernel; no I/O, no detector).",
        END,
    ]
    section = "\n".join(lines) + "\n"
    readme = OUT / "README.md"
    text = readme.read_text() if readme.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    readme.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
