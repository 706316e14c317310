"""Tests of the dark-photon process (isrsim.processes.darkphoton): displaced decay vertices,
kinematics, cross sections, photon angle, line shape, c tau override, weighting, decay channels,
and input validation through the CLI.

References: shared/physics.md 6.1 (production, eq. 6.1 and its numbers), 6.3 (widths, c tau
table), 1.4 (eq. 1.6); scipy quadrature and scipy.stats distributions as independent checks.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from _isr_reference import ref_aprime_gamma_nb
from scipy import integrate, stats

from isrsim.beam import Beam
from isrsim.cli import main
from isrsim.constants import M_E, M_MU
from isrsim.detector.model import load_detector
from isrsim.exceptions import ConfigError
from isrsim.physics import darkphoton as dp
from isrsim.processes import make_process
from isrsim.processes.darkphoton import DarkPhoton
from isrsim.runner import apply_primary_vertex


@pytest.fixture(scope="module")
def belle2_beam():
    return load_detector("belle2").beam


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# --- decay vertex ------------------------------------------------------------------------------
def test_lab_decay_length_is_exponential(belle2_beam):
    # physics.md 6.3: l = beta gamma c tau E with E ~ Exp(1), (beta gamma)_lab = |p_lab|/m.
    # l from the vertex position, beta gamma from the truth A' 4-momentum and m_true: the ratio
    # must be Exp(1). KS test with a fixed seed (p-value > 1e-3), and the mean 1 within
    # 5/sqrt(n_h) separately for A' flying forward and backward in the lab (the standard deviation
    # of Exp(1) is 1). Using the CM beta gamma instead (the Belle II boost changes it by +33 % /
    # -25 % along the beams, physics.md 6.3) would shift the two means by more than 20 sigma.
    proc = DarkPhoton(belle2_beam, mass=0.017, epsilon=1e-3, decay="ee")
    chunk, _ = proc.sample(np.random.default_rng(101), 20000)
    ell = np.linalg.norm(chunk.vtx[:, 2], axis=1)
    p_lab = np.linalg.norm(chunk.p4[:, 0, :3], axis=1)
    bg = p_lab / chunk.extra["m_true"]
    ctau = dp.ctau_cm(0.017, 1e-3)
    z = ell / (bg * ctau)
    assert stats.kstest(z, "expon").pvalue > 1e-3
    for hemi in (chunk.p4[:, 0, 2] > 0, chunk.p4[:, 0, 2] < 0):
        assert hemi.sum() > 2000
        assert abs(z[hemi].mean() - 1.0) < 5.0 / math.sqrt(hemi.sum())
    np.testing.assert_allclose(chunk.extra["decay_length_cm"], ell, rtol=1e-12)
    np.testing.assert_allclose(chunk.extra["betagamma_lab"], bg, rtol=1e-9)
    # physics.md 6.3 table: mean lab decay length ~1.49 mm at the Belle II CM beta gamma 311;
    # the lab boost spreads it by +-30 %, so the sample mean lies within 30 % of it
    assert 0.7 * 0.149 < ell.mean() < 1.3 * 0.149


def test_decay_vertex_on_flight_line(belle2_beam):
    # the decay vertex lies on the A' lab flight line: |v x p_hat| < 1e-9 cm (acceptance), also
    # after the runner's primary-vertex shift. c tau = 10 cm gives metre-scale lever arms.
    proc = DarkPhoton(belle2_beam, mass=0.5, epsilon=1e-3, decay="ll", ctau_cm=10.0)
    chunk, _ = proc.sample(np.random.default_rng(7), 5000)
    p_hat = _unit(chunk.p4[:, 0, :3])
    for j in (2, 3):
        v = chunk.vtx[:, j]
        assert np.abs(np.cross(v, p_hat)).max() < 1e-9
        np.testing.assert_allclose(np.einsum("ij,ij->i", v, p_hat), chunk.extra["decay_length_cm"],
                                   rtol=1e-12, atol=1e-15)
    assert np.all(chunk.vtx[:, :2] == 0.0)
    assert np.all(chunk.parent[:, :2] == -1) and np.all(chunk.parent[:, 2:] == 0)
    assert chunk.extra["decay_length_cm"].max() > 100.0  # the lever arm is really there
    apply_primary_vertex(chunk, belle2_beam, np.random.default_rng(8))
    pv = chunk.vtx[:, 0]
    assert np.std(pv[:, 2]) > 0.01  # sigma_z = 0.025 cm: the shift happened
    rel = chunk.vtx[:, 2] - pv
    assert np.abs(np.cross(rel, p_hat)).max() < 1e-9


# --- kinematics ----------------------------------------------------------------------------------
@pytest.mark.parametrize("decay", ["ee", "mumu", "ll"])
def test_four_momentum_conservation(belle2_beam, decay):
    # lab frame, Belle II beams with the crossing angle (energy spread off, so that every event
    # has the nominal beams): gamma + l- + l+ = beam 4-vector (1e-9 GeV), A' = l- + l+, on-shell
    # final states, A' invariant mass = m_true (with the spread: tests/test_beam_spread.py)
    beam = dataclasses.replace(belle2_beam, sqrt_s_spread_GeV=0.0)
    proc = DarkPhoton(beam, mass=1.0, epsilon=1e-3, decay=decay)
    chunk, _ = proc.sample(np.random.default_rng(3), 4000)
    assert np.all(chunk.npart == 4)
    total = chunk.p4[:, 1] + chunk.p4[:, 2] + chunk.p4[:, 3]
    np.testing.assert_allclose(total, np.broadcast_to(beam.p4_total_lab(), total.shape),
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(chunk.p4[:, 0], chunk.p4[:, 2] + chunk.p4[:, 3], rtol=0, atol=1e-12)

    def mass(p):
        return np.sqrt(np.maximum(p[..., 3] ** 2 - np.sum(p[..., :3] ** 2, axis=-1), 0.0))

    np.testing.assert_allclose(mass(chunk.p4[:, 0]), chunk.extra["m_true"], rtol=1e-9)
    assert np.abs(mass(chunk.p4[:, 1])).max() < 1e-6
    m_l = np.where(np.abs(chunk.pdg[:, 2]) == 13, M_MU, M_E)
    for j in (2, 3):
        np.testing.assert_allclose(mass(chunk.p4[:, j]), m_l, rtol=0, atol=1e-6)
    assert np.all(chunk.pdg[:, 0] == 1023) and np.all(chunk.pdg[:, 1] == 22)
    assert np.all(chunk.pdg[:, 2] == -chunk.pdg[:, 3]) and np.all(chunk.pdg[:, 2] > 0)
    want = {"ee": {11}, "mumu": {13}, "ll": {11, 13}}[decay]
    assert set(np.unique(chunk.pdg[:, 2]).tolist()) == want


# --- cross sections ------------------------------------------------------------------------------
CUTS = {
    "all": None,
    "abs_cos_lt_0.8": {"mode": "tagged", "theta_min": math.acos(0.8), "theta_max": math.acos(-0.8)},
    "untagged_0.1": {"mode": "untagged", "theta_max": 0.1},
}


def _reference_sigma_nb(m, eps, sqrt_s, cut_name, decay):
    cut = CUTS[cut_name]
    if cut is None:
        ranges = [(-1.0, 1.0)]
    elif cut["mode"] == "tagged":
        ranges = [(math.cos(cut["theta_max"]), math.cos(cut["theta_min"]))]
    else:
        c = math.cos(cut["theta_max"])
        ranges = [(-1.0, -c), (c, 1.0)]
    br = dp.branching_ratios(m)
    b = {"ee": br["ee"], "mumu": br["mumu"], "ll": br["ee"] + br["mumu"]}[decay]
    # eq. (6.1) written out in tests/_isr_reference.py, not isrsim's sigma_aprime_gamma_nb
    return sum(ref_aprime_gamma_nb(m, eps, sqrt_s, c1, c2) for c1, c2 in ranges) * b


@pytest.mark.parametrize(("sqrt_s", "m", "decay", "cut"), [
    (10.58, 0.017, "ee", "all"),
    (3.773, 1.5, "mumu", "abs_cos_lt_0.8"),
    (10.58, 1.0, "ll", "untagged_0.1"),
    (3.773, 3.0, "ee", "all"),
])
def test_cross_section_matches_tree_level(sqrt_s, m, decay, cut):
    # sigma inside the cut = eq. (6.1) x BR (physics.md 6.1, 6.3) within 3 MC sigma.
    # At eps = 1e-3 the widths are < 1e-7 GeV, so the BW average differs from the narrow-width
    # value by far less than the float accumulation error of the weight sums (~n 1e-16), which
    # the 1e-9 relative floor covers.
    beam = Beam.symmetric(sqrt_s)
    proc = DarkPhoton(beam, mass=m, epsilon=1e-3, decay=decay, photon_cut=CUTS[cut])
    _, st = proc.sample(np.random.default_rng(11), 20000)
    ref = _reference_sigma_nb(m, 1e-3, sqrt_s, cut, decay)
    assert abs(st.sigma_nb - ref) <= 3.0 * st.sigma_err_nb + 1e-9 * ref
    assert proc.narrow_width_sigma_nb() == pytest.approx(ref, rel=1e-12)


def test_cross_section_physics_md_numbers():
    # physics.md 6.1 [C], eps = 1e-3: 4.39e-5 nb (10.58 GeV, 17 MeV, full angle, BR(ee) = 1);
    # 3.7e-5 nb x BR(mumu) (3.773 GeV, 1.5 GeV, |cos| < 0.8): quoted to 2-3 digits
    p1 = DarkPhoton(Beam.symmetric(10.58), mass=0.017, epsilon=1e-3, decay="ee")
    _, st1 = p1.sample(np.random.default_rng(1), 10000)
    assert st1.sigma_nb == pytest.approx(4.39e-5, rel=2e-3)
    p2 = DarkPhoton(Beam.symmetric(3.773), mass=1.5, epsilon=1e-3, decay="mumu",
                    photon_cut=CUTS["abs_cos_lt_0.8"])
    _, st2 = p2.sample(np.random.default_rng(2), 10000)
    assert st2.sigma_nb / dp.branching_ratios(1.5)["mumu"] == pytest.approx(3.7e-5, rel=0.02)


def test_cross_section_broad_resonance_matches_quadrature():
    # A broad A' (eps = 0.3 at 5 GeV: Gamma = 6.9 MeV, window +-10 Gamma): the weights vary by
    # ~1.4 %, and the MC cross section must equal the line-shape average of eq. (6.1),
    # (1/(u2 - u1)) int du sigma(m'(u)) BR with s' = m^2 + m Gamma tan(u) (the normalised
    # truncated BW), from scipy quadrature of sigma_aprime_gamma_nb, within 3 MC sigma.
    beam = Beam.symmetric(10.58)
    m, eps = 5.0, 0.3
    cut = CUTS["abs_cos_lt_0.8"]
    proc = DarkPhoton(beam, mass=m, epsilon=eps, decay="mumu", photon_cut=cut)
    _, st = proc.sample(np.random.default_rng(5), 100000)
    gam = dp.gamma_total(m, eps)
    mg = m * gam
    u1 = math.atan(((m - 10 * gam) ** 2 - m * m) / mg)
    u2 = math.atan(((m + 10 * gam) ** 2 - m * m) / mg)

    def f(u):
        mp = math.sqrt(m * m + mg * math.tan(u))
        return dp.sigma_aprime_gamma_nb(mp, eps, 10.58, cos_theta_range=(-0.8, 0.8))

    avg = integrate.quad(f, u1, u2, epsabs=0, epsrel=1e-10, limit=200)[0] / (u2 - u1)
    ref = avg * dp.branching_ratios(m)["mumu"]
    assert st.sigma_err_nb > 1e-6 * ref  # the weights really vary
    assert abs(st.sigma_nb - ref) < 3.0 * st.sigma_err_nb
    assert 0.95 < st.unweighting_efficiency < 1.0
    assert st.n_overweight == 0


# --- photon angle ----------------------------------------------------------------------------------
def test_photon_angle_follows_eq_6_1():
    # m = 5 GeV at 10.58 GeV (x0 = 0.777, so the -x0^2/2 term of eq. 6.1 matters), photon in
    # 20 deg < theta < 160 deg (CM), where the m_e terms of (1.6) are < 1e-8. 20 equal bins in
    # cos(theta); expected bin contents from scipy quadrature of (6.1). Pearson chi2 with
    # 19 degrees of freedom (total fixed): require p > 1e-3 (fixed seed).
    beam = Beam.symmetric(10.58)
    th = math.radians(20.0)
    proc = DarkPhoton(beam, mass=5.0, epsilon=1e-3, decay="mumu",
                      photon_cut={"mode": "tagged", "theta_min": th, "theta_max": math.pi - th})
    chunk, _ = proc.sample(np.random.default_rng(21), 40000)
    c = chunk.extra["cos_gamma_cms"]
    x0 = 1.0 - 25.0 / 10.58**2

    def dsdc(cc):
        return (2.0 - 2.0 * x0 + x0 * x0) / (1.0 - cc * cc) - 0.5 * x0 * x0

    edges = np.linspace(-math.cos(th), math.cos(th), 21)
    expect = np.array([integrate.quad(dsdc, a, b)[0] for a, b in zip(edges[:-1], edges[1:])])
    expect *= c.size / expect.sum()
    obs, _ = np.histogram(c, edges)
    chi2 = float(np.sum((obs - expect) ** 2 / expect))
    assert stats.chi2.sf(chi2, 19) > 1e-3
    # the cos(theta) from the truth momenta (lab -> CM) agrees with the stored cos_gamma_cms
    k_cms = chunk.p4[:, 1] @ beam.lab_to_cms().T
    np.testing.assert_allclose(k_cms[:, 2] / k_cms[:, 3], c, atol=1e-9)


# --- line shape and c tau -------------------------------------------------------------------------
def test_breit_wigner_lineshape_width():
    # m = 1 GeV, eps = 0.05: Gamma = Gamma_tot/eps^2 (physics.md 6.3: 8.08e-3 GeV) x 2.5e-3
    # = 2.0e-5 GeV. s' = m'^2 must follow the Cauchy distribution with location m^2 and scale
    # m Gamma (physical total width), truncated to |m' - m| < 10 Gamma: KS test against
    # scipy.stats.cauchy (p > 1e-3), and the fraction with |m' - m| < Gamma/2 (~ half-maximum)
    # against its truncated-Cauchy probability within 4 binomial sigma. (Using Gamma_ee as the
    # width, 0.30 Gamma_tot, would raise that fraction from ~0.52 to ~0.84.)
    m, eps, n = 1.0, 0.05, 20000
    beam = Beam.symmetric(10.58)
    proc = DarkPhoton(beam, mass=m, epsilon=eps, decay="ll")
    chunk, _ = proc.sample(np.random.default_rng(31), n)
    gam = dp.gamma_total(m, eps)
    assert gam / eps**2 == pytest.approx(8.077e-3, rel=0.01)  # physics.md 6.3 table
    mp = chunk.extra["m_true"]
    assert mp.min() >= m - 10 * gam - 1e-15 and mp.max() <= m + 10 * gam + 1e-15
    cau = stats.cauchy(loc=m * m, scale=m * gam)
    lo, hi = cau.cdf((m - 10 * gam) ** 2), cau.cdf((m + 10 * gam) ** 2)
    assert stats.kstest(mp**2, lambda s2: (cau.cdf(s2) - lo) / (hi - lo)).pvalue > 1e-3
    p_in = (cau.cdf((m + gam / 2) ** 2) - cau.cdf((m - gam / 2) ** 2)) / (hi - lo)
    frac = np.mean(np.abs(mp - m) < gam / 2)
    assert abs(frac - p_in) < 4.0 * math.sqrt(p_in * (1 - p_in) / n)
    # the delta line shape
    d = DarkPhoton(beam, mass=m, epsilon=eps, decay="ll", lineshape="delta")
    chunk_d, st_d = d.sample(np.random.default_rng(32), 1000)
    assert np.all(chunk_d.extra["m_true"] == m)
    assert st_d.sum_w == st_d.n_trials and st_d.sigma_err_nb == 0.0


def test_ctau_default_and_override():
    beam = Beam.symmetric(10.58)
    # physics.md 6.3: c tau(17 MeV) = 4.772e-12 m/eps^2 -> 4.772 um (1e-3), 477.2 um (1e-4)
    for eps, want_cm in ((1e-3, 4.772e-4), (1e-4, 4.772e-2)):
        p = DarkPhoton(beam, mass=0.017, epsilon=eps, decay="ee")
        assert p.ctau == pytest.approx(want_cm, rel=1e-3)
    # override: l/(beta gamma) has mean ctau_cm (5 sigma with sigma = ctau/sqrt(n)); the line
    # shape keeps the physical width
    n = 20000
    p = DarkPhoton(beam, mass=1.0, epsilon=1e-3, decay="ll", ctau_cm=2.0)
    chunk, _ = p.sample(np.random.default_rng(41), n)
    assert np.all(chunk.extra["ctau_cm"] == 2.0)
    r = chunk.extra["decay_length_cm"] / chunk.extra["betagamma_lab"]
    assert abs(r.mean() / 2.0 - 1.0) < 5.0 / math.sqrt(n)
    g = dp.gamma_total(1.0, 1e-3)
    assert p.mass_window == pytest.approx((1.0 - 10 * g, 1.0 + 10 * g), rel=1e-12)
    # prompt decays
    p0 = DarkPhoton(beam, mass=1.0, epsilon=1e-3, decay="ll", ctau_cm=0.0)
    chunk0, _ = p0.sample(np.random.default_rng(42), 1000)
    assert np.all(chunk0.vtx == 0.0)


# --- weighting and decay channels ----------------------------------------------------------------
def test_weighted_vs_unweighted_normalisation():
    # broad resonance so that the weights vary (efficiency ~0.986)
    beam = Beam.symmetric(10.58)
    proc = DarkPhoton(beam, mass=5.0, epsilon=0.3, decay="ll", photon_cut=CUTS["abs_cos_lt_0.8"])
    n = 50000
    cw, sw = proc.sample(np.random.default_rng(51), n, weighted=True)
    cu, su = proc.sample(np.random.default_rng(52), n, weighted=False)
    assert sw.n_trials == n and su.n_trials >= n
    assert cw.weight.sum() / n == pytest.approx(sw.sigma_nb, rel=1e-12)
    assert np.all(cu.weight == 1.0)
    assert np.all(cw.weight <= sw.sigma_prop_nb) and cw.weight.min() < 0.98 * sw.sigma_prop_nb
    assert abs(sw.sigma_nb - su.sigma_nb) < 3.0 * math.hypot(sw.sigma_err_nb, su.sigma_err_nb)
    # the weighted and unweighted m' distributions agree: mean m' within 4 sigma
    mw, mu_ = cw.extra["m_true"], cu.extra["m_true"]
    wn = cw.weight / cw.weight.sum()
    mean_w = float(np.sum(wn * mw))
    err_w = math.sqrt(float(np.sum(wn**2 * (mw - mean_w) ** 2)))
    err_u = float(mu_.std() / math.sqrt(n))
    assert abs(mean_w - mu_.mean()) < 4.0 * math.hypot(err_w, err_u)


@pytest.mark.parametrize("m", [0.15, 0.25, 1.0])
def test_ll_channel_fractions(m):
    # decay = "ll": mu mu chosen with probability BR(mumu)/(BR(ee) + BR(mumu)) (physics.md 6.3;
    # zero below 2 m_mu = 0.2113 GeV); 4 binomial sigma
    n = 20000
    proc = DarkPhoton(Beam.symmetric(3.773), mass=m, epsilon=1e-3, decay="ll")
    chunk, st = proc.sample(np.random.default_rng(61), n)
    br = dp.branching_ratios(m)
    p_mu = br["mumu"] / (br["ee"] + br["mumu"])
    frac = np.mean(chunk.pdg[:, 2] == 13)
    if p_mu == 0.0:
        assert frac == 0.0
    else:
        assert abs(frac - p_mu) < 4.0 * math.sqrt(p_mu * (1 - p_mu) / n)
    ref = ref_aprime_gamma_nb(m, 1e-3, 3.773) * (br["ee"] + br["mumu"])  # eq. (6.1), written out
    assert st.sigma_nb == pytest.approx(ref, rel=1e-8)


def test_config_roundtrip(belle2_beam):
    proc = DarkPhoton(belle2_beam, mass=0.017, epsilon=1e-3, decay="ee", ctau_cm=0.5,
                      photon_cut={"mode": "untagged", "theta_max": 0.2}, lineshape="delta")
    cfg = json.loads(json.dumps(proc.config()))
    again = make_process("darkphoton", belle2_beam, **cfg)
    assert again.config() == proc.config()
    a, _ = proc.sample(np.random.default_rng(9), 100)
    b, _ = again.sample(np.random.default_rng(9), 100)
    np.testing.assert_array_equal(a.p4, b.p4)
    np.testing.assert_array_equal(a.vtx, b.vtx)


# --- input validation -------------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "field"), [
    ({"mass": 0.2, "decay": "mumu"}, "mass"),          # below 2 m_mu
    ({"mass": 2 * M_MU, "decay": "mumu"}, "mass"),     # at threshold
    ({"mass": 0.001, "decay": "ee"}, "mass"),          # below 2 m_e
    ({"mass": 2 * M_E, "decay": "ll"}, "mass"),
    ({"mass": 10.58}, "mass"),                         # at sqrt(s)
    ({"mass": 10.55}, "mass"),                         # above the physics range 10.5 GeV
    ({"epsilon": 0.0}, "epsilon"),
    ({"epsilon": 1.0}, "epsilon"),
    ({"epsilon": -1e-3}, "epsilon"),
    ({"epsilon": float("nan")}, "epsilon"),
    ({"decay": "tautau"}, "decay"),
    ({"lineshape": "gauss"}, "lineshape"),
    ({"bw_window": 0}, "bw_window"),
    ({"ctau_cm": -1.0}, "ctau_cm"),
    ({"photon_cut": {"mode": "tagged", "theta_min": 2.0, "theta_max": 1.0}}, "photon_cut"),
    ({"foo": 1}, "foo"),
])
def test_bad_input_raises(params, field):
    kw = {"mass": 0.017, "epsilon": 1e-3, "decay": "ee"} | params
    with pytest.raises(ConfigError, match=field) as exc:
        DarkPhoton(Beam.symmetric(10.58), **kw)
    assert "\n" not in str(exc.value) and "allowed" in str(exc.value)


def test_mass_above_sqrt_s_at_low_energy():
    with pytest.raises(ConfigError, match=r"mass = 3\.8 is invalid: allowed .*sqrt\(s"):
        DarkPhoton(Beam.symmetric(3.773), mass=3.8, epsilon=1e-3, decay="mumu")


_CLI = ["generate", "--process", "darkphoton", "--mass", "0.017", "--epsilon", "1e-3",
        "--decay", "ee", "--sqrt-s", "10.58", "--events", "10000", "--quiet"]


@pytest.mark.parametrize(("flags", "field"), [
    (["--mass", "0.2", "--decay", "mumu"], "mass"),
    (["--mass", "11"], "mass"),
    (["--epsilon", "0"], "epsilon"),
    (["--epsilon", "1"], "epsilon"),
    (["--decay", "pipi"], "decay"),
    (["--param", "ctau_cm=-2"], "ctau_cm"),
])
def test_cli_bad_input_exits_2(tmp_path, capsys, flags, field):
    rc = main([*_CLI, "-o", str(tmp_path / "x.parquet"), *flags])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and field in err and "allowed" in err
    assert not (tmp_path / "x.parquet").exists()


def test_cli_generate_symmetric_and_belle2(tmp_path, capsys):
    from isrsim.io import read_events

    out1 = tmp_path / "x.parquet"
    assert main([*_CLI, "-o", str(out1)]) == 0
    ev, meta = read_events(out1)
    assert len(ev) == 10000 and meta["process"] == "darkphoton"
    assert meta["cross_section_nb"] == pytest.approx(dp.sigma_aprime_gamma_nb(0.017, 1e-3, 10.58),
                                                     rel=1e-8)
    assert ev.truth.pdg[0].tolist() == [1023, 22, 11, -11]

    out2 = tmp_path / "y.parquet"
    argv = [a for a in _CLI if a not in ("--sqrt-s", "10.58")]
    assert main([*argv, "--detector", "belle2", "-o", str(out2)]) == 0
    ev2, meta2 = read_events(out2)
    belle2 = load_detector("belle2")
    assert meta2["beam"]["e_minus_GeV"] == belle2.beam.e_minus_GeV
    assert meta2["detector"]["name"] == belle2.name
    # decay vertex on the flight line from the (shifted) A' production vertex, after Parquet
    t = ev2.truth
    v_a = np.stack([t.vx[:, 0], t.vy[:, 0], t.vz[:, 0]], axis=1).to_numpy()
    v_l = np.stack([t.vx[:, 2], t.vy[:, 2], t.vz[:, 2]], axis=1).to_numpy()
    p_a = np.stack([t.px[:, 0], t.py[:, 0], t.pz[:, 0]], axis=1).to_numpy()
    assert np.abs(np.cross(v_l - v_a, _unit(p_a))).max() < 1e-9
    assert np.std(v_a[:, 2]) > 0.01  # primary vertex from the luminous region
    n_trk = np.asarray([len(x) for x in ev2.tracks.charge])
    assert n_trk.sum() > 0
    capsys.readouterr()


def test_cli_luminosity_poisson(tmp_path, capsys):
    # Poisson pseudo-data: N ~ Poisson(sigma L); 100/fb x 4.39e-5 nb = 4394 events, 5 sigma
    out = tmp_path / "lumi.parquet"
    argv = [a for a in _CLI if a not in ("--events", "10000")]
    assert main([*argv, "--luminosity", "100/fb", "-o", str(out)]) == 0
    from isrsim.io import read_metadata

    meta = read_metadata(out)
    mean = dp.sigma_aprime_gamma_nb(0.017, 1e-3, 10.58) * 1e8
    assert abs(meta["n_events"] - mean) < 5.0 * math.sqrt(mean)
    capsys.readouterr()
