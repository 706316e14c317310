"""Radiative Bhabha scattering ``isr_bhabha`` (collinear ISR x Born Bhabha, s + t channel).

Independent references: the Born shape in Mandelstam form (Peskin & Schroeder problem 5.2),
numerical integrals (scipy.quad) of it, an explicit Lorentz boost for the acceptance mapping,
and the probability-integral transform of the sampled angles.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from isrsim.beam import Beam
from isrsim.exceptions import ConfigError
from isrsim.physics.born import BHABHA_ENVELOPE, bhabha_c_star, bhabha_factor, bhabha_primitive, bhabha_shape
from isrsim.processes import make_process

SQRT_S = 3.773
PC = {"mode": "untagged", "theta_max": 0.15}


def mandelstam_shape(c: float) -> float:
    """(t^2 + u^2)/s^2 + (s^2 + u^2)/t^2 + 2 u^2/(s t) with s = 1."""
    t, u = -(1.0 - c) / 2.0, -(1.0 + c) / 2.0
    return t * t + u * u + (1.0 + u * u) / (t * t) + 2.0 * u * u / t


def test_shape_is_the_mandelstam_form_and_its_primitive():
    for c in np.linspace(-0.999, 0.999, 41):
        assert bhabha_shape(c) == pytest.approx(mandelstam_shape(c), rel=1e-12)
    # the s-channel part alone integrates to 4/3; the full shape to the primitive
    assert integrate.quad(lambda c: (1 + c * c) / 2, -1, 1)[0] == pytest.approx(4 / 3)
    for c1, c2 in [(-0.9, 0.9), (-0.3, 0.95), (0.5, 0.99)]:
        ref = integrate.quad(mandelstam_shape, c1, c2, epsabs=0, epsrel=1e-11)[0]
        assert bhabha_primitive(c2) - bhabha_primitive(c1) == pytest.approx(ref, rel=1e-9)
    # the envelope 8/(1 - c)^2 bounds the shape, and is reached at both ends
    c = np.linspace(-1.0, 0.9999, 20001)
    g = np.array([mandelstam_shape(v) for v in c]) * (1 - c) ** 2
    assert g.max() <= BHABHA_ENVELOPE * (1 + 1e-9)
    assert g[0] == pytest.approx(BHABHA_ENVELOPE) and g[-1] == pytest.approx(BHABHA_ENVELOPE, rel=1e-3)


@pytest.mark.parametrize("x", [0.05, 0.3, 0.6, 0.9])
def test_c_star_is_the_cm_acceptance_for_a_collinear_photon(x):
    """Both massless leptons of a pair moving along z with beta = x/(2 - x), emitted at
    cos theta* = +-c*, have |cos theta_CM| <= C, the outer one exactly C."""
    big_c = 0.93
    beta = x / (2 - x)
    cs = bhabha_c_star(x, big_c)
    lab = [(c + beta) / (1 + beta * c) for c in (cs, -cs)]  # boost of a massless direction
    assert max(abs(v) for v in lab) == pytest.approx(big_c, rel=1e-12)
    assert bhabha_c_star(0.99, big_c) == 0.0 and bhabha_factor(0.99, big_c) == 0.0
    ref = integrate.quad(mandelstam_shape, -cs, cs, epsrel=1e-11)[0] / (4 / 3)
    assert bhabha_factor(x, big_c) == pytest.approx(ref, rel=1e-9)


def test_cross_section_is_isr_ee_times_the_bhabha_factor():
    """sigma(isr_bhabha) from the sampler's weights against the integral of dsigma/dM(isr_ee)
    times the ratio of Bhabha to s-channel Born cross sections (quad of the Mandelstam form)."""
    beam = Beam.symmetric(SQRT_S)
    ee = make_process("isr_ee", beam, mass_range=[1.5, 3.4], photon_cut=PC)
    bh = make_process("isr_bhabha", beam, mass_range=[1.5, 3.4], photon_cut=PC, cos_theta_max=0.95)
    s = beam.s

    def integrand(m):
        x = 1 - m * m / s
        cs = bhabha_c_star(x, 0.95)
        r = integrate.quad(mandelstam_shape, -cs, cs, epsrel=1e-10)[0] / (4 / 3)
        return float(ee.dsigma_dm_nb(m)[0]) * r

    ref = integrate.quad(integrand, 1.5, 3.4, epsrel=1e-8, limit=200)[0]
    _, st = bh.sample(np.random.default_rng(3), 200_000, weighted=True)
    assert abs(st.sigma_nb - ref) < 4 * st.sigma_err_nb + 1e-4 * ref, (st.sigma_nb, st.sigma_err_nb, ref)
    # the annihilation part is a few per cent (BESIII 2017 quotes 2-8 % after its selection)
    sigma_ee = integrate.quad(lambda m: float(ee.dsigma_dm_nb(m)[0]), 1.5, 3.4, limit=200)[0]
    assert 0.01 < sigma_ee / ref < 0.1


def test_sampled_angles_follow_the_born_shape():
    """Probability-integral transform of cos theta* with each event's own cut c*(x): uniform
    (KS test); the s-channel shape (1 + c^2) in its place is rejected."""
    beam = Beam.symmetric(SQRT_S)
    bh = make_process("isr_bhabha", beam, mass_range=[1.5, 3.4], photon_cut=PC)
    tr, _ = bh.sample(np.random.default_rng(5), 100_000)
    x, c = tr.extra["x_cms"], tr.extra["cos_star"]
    cs = np.array([bhabha_c_star(v, 0.95) for v in x])
    assert np.all(np.abs(c) <= cs + 1e-12)
    fp = np.vectorize(bhabha_primitive)
    u = (fp(c) - fp(-cs)) / (fp(cs) - fp(-cs))
    assert stats.kstest(u, "uniform").pvalue > 1e-3

    def s_cdf(c, cs):
        return ((c + c**3 / 3) - (-cs - cs**3 / 3)) / (2 * (cs + cs**3 / 3))

    assert stats.kstest(s_cdf(c, cs), "uniform").pvalue < 1e-6


def test_collinear_photon_puts_both_leptons_inside_the_cm_cut():
    """With the photon within 1 mrad of the beam the generator cut is the CM lepton acceptance:
    every lepton has |cos theta_CM| <= C (to the photon's tilt), and the edge is populated."""
    beam = Beam.symmetric(SQRT_S)
    c_max = 0.9
    bh = make_process("isr_bhabha", beam, mass_range=[1.0, 3.5], cos_theta_max=c_max,
                      photon_cut={"mode": "untagged", "theta_max": 1e-3})
    tr, _ = bh.sample(np.random.default_rng(7), 50_000)
    p = tr.p4[:, :2, :3]
    cos = np.abs(p[..., 2]) / np.linalg.norm(p, axis=-1)
    assert tr.pdg[0, 0] == 11 and tr.pdg[0, 1] == -11
    assert cos.max() <= c_max + 2e-3
    assert np.mean(cos.max(axis=1) > c_max - 0.01) > 0.05
    # charge asymmetry of the t-channel: the e- follows the e- beam (+z)
    assert np.mean(p[:, 0, 2] > 0) > 0.75


def test_bad_parameters_name_the_field():
    beam = Beam.symmetric(SQRT_S)
    with pytest.raises(ConfigError, match="photon_cut"):
        make_process("isr_bhabha", beam, mass_range=[1.5, 3.4], photon_cut="all")
    with pytest.raises(ConfigError, match="theta_max <= 0.2"):
        make_process("isr_bhabha", beam, mass_range=[1.5, 3.4],
                     photon_cut={"mode": "untagged", "theta_max": 0.3})
    for bad in (0.0, 1.0, "x", float("nan")):
        with pytest.raises(ConfigError, match="cos_theta_max"):
            make_process("isr_bhabha", beam, mass_range=[1.5, 3.4], cos_theta_max=bad)
    m_min = math.sqrt(beam.s * 0.05 / 1.95)
    with pytest.raises(ConfigError, match="mass_range"):
        make_process("isr_bhabha", beam, mass_range=[0.2, 0.9 * m_min])
    with pytest.raises(ConfigError, match="cos_theta_max"):
        make_process("isr_bhabha", beam, mass_range=[1.5, 3.4], cos_max=0.9)
    cfg = make_process("isr_bhabha", beam, mass_range=[1.5, 3.4]).config()
    assert cfg["cos_theta_max"] == 0.95 and cfg["photon_cut"] == PC


def test_besiii_selected_yield_does_not_depend_on_the_generator_cut(tmp_path):
    """The selected e e cross section (besiii2017, |cos theta_lab| < cos 0.4 = 0.921) is the same
    with the generator cut C = 0.95 and 0.98 (within 4 sd of the Poisson errors), and clearly
    lower with C = 0.85, a cut inside the acceptance (the comparison can fail)."""
    from isrsim.detector import load_detector
    from isrsim.workflows.project import background_candidates

    det = load_detector("besiii")

    def sigma_sel(c_max, lumi, seed):
        bkg = {"process": "isr_bhabha", "params": {"mass_range": [1.5, 3.4], "photon_cut": PC,
                                                   "cos_theta_max": c_max}}
        path, _ = background_candidates(bkg, det, selection="besiii2017", seed=seed,
                                        mc_luminosity_invnb=lumi, cache_dir=tmp_path)
        import pyarrow.parquet as pq

        n = sum(1 for ch in pq.read_table(path, columns=["channel"]).column(0).to_pylist() if ch == "ee")
        return n / lumi, math.sqrt(n) / lumi

    s95, e95 = sigma_sel(0.95, 2500.0, 1)
    s98, e98 = sigma_sel(0.98, 2000.0, 2)
    s85, e85 = sigma_sel(0.85, 2500.0, 3)
    assert abs(s95 - s98) < 4 * math.hypot(e95, e98), (s95, e95, s98, e98)
    assert s95 - s85 > 5 * math.hypot(e95, e85), (s95, s85)
