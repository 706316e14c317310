"""Validation of photon conversions (issue 5): vertex radii, M_ee at the PCA, benchmarks.

Run:  python validation/conversion/make_conversion.py [--quick]
Writes PNGs and README.md next to this script. Uses only isrsim, numpy and matplotlib.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import isrsim  # noqa: E402
from isrsim.constants import K_CURV  # noqa: E402
from isrsim.detector.conversion import convert_photons  # noqa: E402
from isrsim.detector.model import load_detector  # noqa: E402
from isrsim.processes.diphoton import DiPhoton  # noqa: E402
from isrsim.units import MeV  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 20261121
ACCEPT = {"belle2": {"theta_lab_deg": (17.0, 150.0)}, "besiii": {"cos_theta_max": 0.93}}
WINDOW_17 = (15.0 * MeV, 19.0 * MeV)


def m_pred(bz_t: float, r_cm: float, x: float = 0.5) -> float:
    """physics.md eq. (5.3): M_PCA = 0.2998 B R/sqrt(x(1 - x)) [GeV] (R in cm via K_CURV)."""
    return K_CURV * bz_t * r_cm / math.sqrt(x * (1 - x))


def forced_sample(det, n, rng, **kw):
    proc = DiPhoton(det.beam, conversion="forced", detector=det, **ACCEPT[det.name], **kw)
    return proc.sample(rng, n, weighted=True)


def plot_radius(dets, n, rng, lines):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, det in zip(axes, dets):
        chunk, stats = forced_sample(det, n, rng, m_pca_max=None)
        r = chunk.extra["conv_r_cm"]
        # per-event weight -> d sigma / dR [pb/mm]
        w = chunk.weight / stats.n_trials * 1e3  # nb -> pb
        r_max = det.material.r_cm.max() * 1.08
        bins = np.linspace(0, r_max, 600)
        h, e = np.histogram(r, bins=bins, weights=w)
        ax.step(e[:-1], h / (np.diff(e) * 10), where="post", color="k", lw=0.8)
        last_label = ""
        for j, rr in enumerate(det.material.r_cm):
            ax.axvline(rr, color="C3", lw=0.6, ls=":")
            label = det.material.names[j].split("(")[0].split(":")[0].strip()
            if label == last_label:  # sub-layers of one object (beam pipe): one label
                continue
            last_label = label
            ax.text(rr, 1.02, label, rotation=90, fontsize=7,
                    transform=ax.get_xaxis_transform(), ha="center", va="bottom")
        ax.set_yscale("log")
        ax.set_xlabel("conversion vertex radius R_xy [cm]")
        ax.set_ylabel("d sigma/dR [pb/mm] (gamma gamma x P_conv)")
        ax.set_title(f"{det.name}: {det.bz_T:g} T, {', '.join(f'{k}={v}' for k, v in ACCEPT[det.name].items())}",
                     fontsize=9, y=1.25)
        sig_tot = stats.sigma_nb
        lines.append(f"| {det.name} | {sig_tot / 1e-3:.2f} pb | "
                     + ", ".join(f"{nm.split('(')[0].strip()}: {s_:.3f}" for nm, s_ in
                                 zip(det.material.names, per_layer(chunk, stats, det))) + " |")
    fig.tight_layout()
    fig.savefig(HERE / "conversion_radius.png", dpi=130)
    plt.close(fig)


def per_layer(chunk, stats, det):
    layer = chunk.extra["conv_layer"].astype(int)
    return [float(np.sum(chunk.weight[layer == j]) / stats.n_trials / 1e-3) for j in range(det.material.n)]


def mode_of_ratio(ratio: np.ndarray) -> float:
    """Mode of M/M_pred: 1 % bins, 7-bin moving average, bin centre (as in the test)."""
    hh, ee = np.histogram(ratio, bins=np.arange(0.5, 2.0, 0.01))
    return float(ee[np.convolve(hh, np.ones(7) / 7, mode="same").argmax()] + 0.005)


def mode_estimator_shift(rng, n=2_000_000, smear=0.01) -> tuple[float, float]:
    """Shift of :func:`mode_of_ratio` on the ideal eq. (5.3) distribution, M/M_pred =
    1/sqrt(4x(1-x)) with x from the Bethe-Heitler sharing 1 - 4/3 x(1-x) (physics.md 5.2,
    numpy accept/reject): without smearing, and with a Gaussian relative smearing ``smear``."""
    x = rng.random(2 * n)
    x = x[rng.random(2 * n) < 1.0 - 4.0 / 3.0 * x * (1.0 - x)]
    u = 1.0 / np.sqrt(4.0 * x * (1.0 - x))
    return mode_of_ratio(u) - 1.0, mode_of_ratio(u * (1.0 + smear * rng.standard_normal(u.size))) - 1.0


def plot_mpca(dets, n, rng, rows, deviations):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, det in zip(axes, dets):
        chunk, stats = forced_sample(det, n, rng, m_pca_max=None)
        layer = chunk.extra["conv_layer"].astype(int)
        m = chunk.extra["m_pca"] / MeV
        bins = np.linspace(0, 60, 241)
        for j in range(det.material.n):
            sel = layer == j
            if sel.sum() < 500:
                continue
            h, e = np.histogram(m[sel], bins=bins, weights=chunk.weight[sel] / stats.n_trials / 1e-3)
            line = ax.step(e[:-1], h / np.diff(e), where="post", lw=0.9,
                           label=det.material.names[j].split("(")[0].strip())
            pred = m_pred(det.bz_T, det.material.r_cm[j]) / MeV
            if pred < 60:
                ax.axvline(pred, color=line[0].get_color(), ls="--", lw=0.8)
            # mode in units of the prediction (1 % bins, 7-bin moving average), as in the test
            mode = mode_of_ratio(m[sel] / pred)
            deviations.append(mode - 1)
            rows.append(f"| {det.name} | {det.material.names[j].split('(')[0].strip()} | "
                        f"{det.material.r_cm[j]:.3f} | {pred:.1f} | {mode * pred:.1f} | {mode - 1:+.1%} |")
        ax.axvline(17.0, color="k", lw=1.5, label="17 MeV (X17)")
        ax.set_xlabel("M_ee at the PCA [MeV]")
        ax.set_ylabel("d sigma/dM [pb/MeV]")
        ax.set_title(f"{det.name} ({det.bz_T:g} T): dashed = eq. (5.3) at x = 1/2", fontsize=9)
        ax.legend(fontsize=6)
        ax.set_xlim(0, 60)
    fig.tight_layout()
    fig.savefig(HERE / "mpca_per_layer.png", dpi=130)
    plt.close(fig)


def benchmark(det, n, rng):
    """Throughput numbers (1 core; compilation excluded by a warm-up call)."""
    res = {}
    # (a) DiPhoton with forced conversions (all layers, no preselection): 1 conversion per event
    proc = DiPhoton(det.beam, conversion="forced", detector=det, m_pca_max=None, **ACCEPT["belle2"])
    proc.sample(rng, 1000, weighted=True)
    t0 = time.process_time()
    chunk, _ = proc.sample(rng, n, weighted=True)
    res["forced_conv_per_s"] = np.count_nonzero(chunk.extra["conv_n"]) / (time.process_time() - t0)
    # (b) convert_photons on an existing chunk (transport of both photons, forced)
    plain = DiPhoton(det.beam, **ACCEPT["belle2"])
    base, _ = plain.sample(rng, n)
    convert_photons(base.slice(0, 100), det.material, rng, mode="forced")
    t0 = time.process_time()
    convert_photons(base, det.material, rng, mode="forced")
    res["convert_photons_per_s"] = n / (time.process_time() - t0)
    # (c) effective luminosity per CPU hour for M_PCA in the 17 MeV window, forced in the beam
    #     pipe and the PXD (the only layers that reach 15-19 MeV), preselection M_PCA < 60 MeV
    #     (weighted events); natural conversions, unweighted (accept/reject), for comparison
    for mode, layers in (("forced", ["beam pipe", "PXD"]), ("natural", None)):
        kw = {"conversion_layers": layers} if layers else {}
        weighted = mode == "forced"
        p = DiPhoton(det.beam, conversion=mode, detector=det, **ACCEPT["belle2"], **kw)
        p.sample(rng, 200, weighted=weighted)
        n_mode = n if weighted else max(n // 20, 2000)
        t0 = time.process_time()
        ch, st = p.sample(rng, n_mode, weighted=weighted)
        cpu = time.process_time() - t0
        sel = (ch.extra["m_pca"] >= WINDOW_17[0]) & (ch.extra["m_pca"] < WINDOW_17[1]) & (ch.weight > 0)
        # per-event cross-section weights [nb]: w sigma_prop / n_trials (unweighted: w = 1)
        w = ch.weight[sel] if weighted else np.full(int(sel.sum()), st.sigma_prop_nb)
        sigma_win = w.sum() / st.n_trials  # nb
        n_eff = w.sum() ** 2 / np.sum(w**2) if w.size else 0.0
        lumi = n_eff / sigma_win if sigma_win > 0 else 0.0  # nb^-1
        res[f"{mode}_sigma_window_fb"] = sigma_win / 1e-6
        res[f"{mode}_sigma_window_err_fb"] = math.sqrt(np.sum(w**2)) / st.n_trials / 1e-6
        res[f"{mode}_lumi_per_cpu_hour_invab"] = lumi / cpu * 3600 / 1e9
        res[f"{mode}_events_per_s"] = n_mode / cpu
        res[f"{mode}_n_window"] = int(sel.sum())
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller samples")
    args = ap.parse_args()
    n = 30000 if args.quick else 300000
    rng = np.random.default_rng(SEED)
    dets = [load_detector("belle2"), load_detector("besiii")]
    sig_lines: list[str] = []
    plot_radius(dets, n, rng, sig_lines)
    rows: list[str] = []
    deviations: list[float] = []
    plot_mpca(dets, n, rng, rows, deviations)
    worst = max(abs(d) for d in deviations)
    bench = benchmark(dets[0], n, rng)
    shift_sharp, shift_smeared = mode_estimator_shift(np.random.default_rng(SEED + 1))
    text = f"""# Photon conversions: validation (issue 5)

Generated by `python validation/conversion/make_conversion.py` (isrsim {isrsim.__version__},
seed {SEED}, {n} forced-conversion events per sample; numpy {np.__version__}, Python
{platform.python_version()}, {platform.processor() or platform.machine()}).

Samples: `DiPhoton` (e+e- -> gamma gamma at LO, physics.md section 4) with **forced** conversions
in all material layers of the bundled detector files (`detectors/belle2.toml`,
`detectors/besiii.toml`), no M_PCA preselection. Acceptance: Belle II 17-150 deg in the lab (both
photons), BESIII |cos theta*| < 0.93. Weights carry P_conv, so the histograms are
d sigma(gamma gamma in acceptance, one photon converted)/dX.

## Conversion-vertex radius (`conversion_radius.png`)

The vertices sit on the layer radii (dotted lines): Belle II beam pipe (1.0-1.2 cm, four
sub-layers), PXD 1.4 / 2.2 cm (L2 only 17 % populated in Run 1), SVD 3.9 / 8.0 / 10.4 / 13.5 cm,
CDC inner wall 16.3 cm; BESIII beam pipe 3.15-3.37 cm and MDC inner wall 6.4 cm.

sigma(gamma gamma in acceptance) x P(conversion) per layer [pb]:

| detector | total | per layer [pb] |
|---|---|---|
{chr(10).join(sig_lines)}

## M_ee at the point of closest approach (`mpca_per_layer.png`)

Masses from the e+ and e- momenta at their perigees w.r.t. the origin (exact helices in the
solenoid field), i.e. the "before vertex fit" mass of physics.md 5.4. Dashed lines: eq. (5.3)
at x = 1/2, 2 x 0.2998 B R. The distribution of each layer has a Jacobian peak at that value
(x = 1/2 is the minimum of 1/sqrt(x(1-x))), smeared upwards by the energy sharing and in both
directions by the intrinsic opening angle (5.3). Mode of each layer (1 % bins in M/M_pred,
7-bin moving average, bin centre). On this one-sided, right-skewed peak the estimator itself
moves the mode up: applied to the ideal eq. (5.3) distribution (Bethe-Heitler sharing, no
opening angle) it gives {shift_sharp:+.1%}, and {shift_smeared:+.1%} with a 1 % Gaussian smearing, so
the +2.5 % of the outer layers is the estimator's own shift; the larger shifts of the beam pipe and
PXD L1 come from the pair's intrinsic opening angle, relatively larger at low M_PCA:

| detector | layer | R [cm] | eq. (5.3) [MeV] | mode [MeV] | mode/pred - 1 |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Largest |mode/pred - 1| = {worst:.1%}: **{'all' if worst < 0.10 else 'NOT all'}** modes are within 10 % of the
prediction (acceptance criterion of issue 5). The test
`tests/test_diphoton_process.py::test_belle2_mpca_peaks_per_layer` is tighter where the opening
angle does not smear the peak: mode/pred in [1.00, 1.04] for layers at R >= 3 cm (a 5 % error in
B or R fails), within 10 % only for the beam pipe and PXD L1. At Belle II the beam pipe
and PXD L1 (9-13 MeV, tails to 20 MeV) and PXD L2 (19.8 MeV) populate the 17 MeV region; at
BESIII the beam pipe peaks at 19-20 MeV, right on top of a 17 MeV signal.

## Benchmarks (Belle II, 1 core, CPU time, compilation excluded)

| quantity | value |
|---|---|
| DiPhoton + forced conversion (all layers, 1 conversion/event) | {bench['forced_conv_per_s'] / 1e6:.2f} M conversions/s |
| `convert_photons` on an existing chunk (forced, 2 photons/event) | {bench['convert_photons_per_s'] / 1e6:.2f} M events/s |
| sigma(M_PCA in 15-19 MeV), forced (beam pipe + PXD) | {bench['forced_sigma_window_fb']:.1f} +- {bench['forced_sigma_window_err_fb']:.1f} fb |
| sigma(M_PCA in 15-19 MeV), natural (unweighted) | {bench['natural_sigma_window_fb']:.1f} +- {bench['natural_sigma_window_err_fb']:.1f} fb ({bench['natural_n_window']} events) |
| effective luminosity per CPU hour, 17 MeV window, **forced** | {bench['forced_lumi_per_cpu_hour_invab']:.2f} ab^-1 / CPU-hour |
| effective luminosity per CPU hour, 17 MeV window, natural (unweighted) | {bench['natural_lumi_per_cpu_hour_invab']:.3f} ab^-1 / CPU-hour |

Effective luminosity = N_eff/sigma_window with N_eff = (sum w)^2/sum w^2 (the size of an
unweighted sample with the same statistical power). Window: generator-level M_PCA in 15-19 MeV,
lab acceptance 17-150 deg for both photons, preselection M_PCA < 60 MeV. 1/ab of Belle II
conversion background in this window therefore costs about
{1 / max(bench['forced_lumi_per_cpu_hour_invab'], 1e-12) * 60:.1f} CPU-minutes with forced conversions
(generation only; detector simulation and reconstruction come on top).
"""
    (HERE / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
