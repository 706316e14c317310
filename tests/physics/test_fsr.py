"""Final-state radiation (isrsim.physics.fsr and the ``fsr`` option of the ISR processes).

Independent references: scipy quadrature of the eikonal angular integral and of the spectrum,
the textbook soft-photon exponent (2 alpha/pi)(ln(M^2/m^2) - 1) of a relativistic pair
(Yennie, Frautschi, Suura, Ann. Phys. 13 (1961) 379), exact 4-momentum conservation, and the
gamma* mass rebuilt from f fbar gamma_FSR. Statistical tests: fixed seeds, chi2 p-values
> 1e-3 (a correct sampler fails one of them with probability ~1e-3 per test).
"""

from __future__ import annotations

import itertools
import math

import numba
import numpy as np
import pytest
from scipy import integrate, stats

from isrsim.beam import Beam
from isrsim.constants import ALPHA, M_E, M_MU, M_PI
from isrsim.exceptions import ConfigError
from isrsim.physics.fsr import dipole_integral, fsr_exponent, sample_dipole_cos, sample_fsr_x
from isrsim.processes import make_process


@numba.njit
def _draw_x(rng, n, beta_f, x_max, spin):
    out = np.empty(n)
    for i in range(n):
        out[i] = sample_fsr_x(rng, beta_f, x_max, spin)
    return out


@numba.njit
def _draw_c(rng, n, beta):
    out = np.empty(n)
    for i in range(n):
        out[i] = sample_dipole_cos(rng, beta)
    return out


@pytest.mark.parametrize("beta", [1e-5, 1e-3, 0.1, 0.5, 0.9, 0.999, 1.0 - 1e-9])
def test_dipole_integral_matches_quadrature(beta):
    """Quadrature in y = atanh(beta c), where the integrand beta (1 - c^2)/(1 - beta^2 c^2) is
    smooth even when the peaks at |c| -> 1 are 1e-9 wide."""

    def f(y):
        c = math.tanh(y) / beta
        return beta * (1 - c) * (1 + c) / (1 - beta * beta * c * c)

    num = integrate.quad(f, -math.atanh(beta), math.atanh(beta), limit=200, epsabs=0, epsrel=1e-10)[0]
    assert dipole_integral(beta) == pytest.approx(num, rel=1e-8)


@pytest.mark.parametrize(("m", "m_f"), [(3.0, M_E), (0.017, M_E), (3.0, M_MU), (10.0, M_MU)])
def test_exponent_has_the_textbook_relativistic_limit(m, m_f):
    """beta_f -> (2 alpha/pi)(ln(M^2/m^2) - 1) up to O(m^2/M^2 ln) terms (YFS 1961)."""
    textbook = 2 * ALPHA / math.pi * (math.log(m * m / (m_f * m_f)) - 1.0)
    r = (2 * m_f / m) ** 2
    assert fsr_exponent(m, m_f) == pytest.approx(textbook, rel=5 * r * math.log(1 / r) + 1e-12)


def test_exponent_vanishes_at_threshold():
    assert fsr_exponent(2 * M_MU, M_MU) == 0.0
    b = 1e-2
    m = 2 * M_MU / math.sqrt(1 - b * b)
    assert fsr_exponent(m, M_MU) == pytest.approx(2 * ALPHA / math.pi * 4 / 3 * b * b, rel=1e-3)


@pytest.mark.parametrize(("beta_f", "x_max", "spin"), [(0.106, 1.0 - 1e-7, 1), (0.03, 0.95, 1), (0.02, 0.9, 0)])
def test_radiated_fraction_follows_the_density(beta_f, x_max, spin):
    """x ~ beta_f x^(beta_f - 1) h(x) on (0, x_max), h = (1 + (1-x)^2)/2 (spin 1/2) or 1 - x:
    chi2 in bins of ln x against the quadrature of the density."""
    h = (lambda x: 0.5 * (1 + (1 - x) ** 2)) if spin else (lambda x: 1 - x)
    dens = lambda x: beta_f * x ** (beta_f - 1) * h(x)
    n = 200_000
    x = _draw_x(np.random.default_rng(31), n, beta_f, x_max, spin)
    assert x.min() > 0
    assert x.max() < x_max
    edges = np.concatenate([[0.0], np.geomspace(1e-8, x_max, 30)])
    # int_0^e beta x^(beta-1) dx = e^beta: the first bin in closed form (h ~ 1 there)
    prob = [edges[1] ** beta_f * h(0.5 * edges[1])]
    prob += [integrate.quad(dens, a, b, epsrel=1e-10)[0] for a, b in itertools.pairwise(edges[1:])]
    prob = np.array(prob) / np.sum(prob)
    counts = np.histogram(x, edges)[0]
    expected = n * prob
    ok = expected > 20
    chi2 = np.sum((counts[ok] - expected[ok]) ** 2 / expected[ok])
    assert stats.chi2.sf(chi2, ok.sum() - 1) > 1e-3


@pytest.mark.parametrize("beta", [0.3, 0.99, 1.0 - 1e-8])
def test_photon_angle_follows_the_dipole_pattern(beta):
    n = 200_000
    c = _draw_c(np.random.default_rng(32), n, beta)
    # bins in y = atanh(beta c), where the pattern is smooth even for beta -> 1
    y_edges = np.linspace(-math.atanh(beta), math.atanh(beta), 41)
    c_edges = np.tanh(y_edges) / beta
    c_edges[0], c_edges[-1] = -1.0, 1.0
    f = lambda t: (1 - t * t) / (1 - beta * beta * t * t) ** 2
    prob = np.array([integrate.quad(f, a, b, epsrel=1e-10)[0] for a, b in itertools.pairwise(c_edges)])
    prob /= prob.sum()
    counts = np.histogram(c, c_edges)[0]
    expected = n * prob
    ok = expected > 20
    chi2 = np.sum((counts[ok] - expected[ok]) ** 2 / expected[ok])
    assert stats.chi2.sf(chi2, ok.sum() - 1) > 1e-3


def _sum_p4(t):
    tot = np.zeros((t.n, 4))
    for j in range(t.k):
        msk = j < t.npart
        tot[msk] += t.p4[msk, j]
    return tot


def _mass(p):
    return np.sqrt(np.maximum(p[..., 3] ** 2 - (p[..., :3] ** 2).sum(-1), 0.0))


@pytest.mark.parametrize("name", ["isr_mumu", "isr_ee", "isr_pipi"])
def test_process_with_fsr_conserves_momentum_and_the_gamma_star_mass(name):
    beam = Beam(e_minus_GeV=7.0, e_plus_GeV=4.0, crossing_half_angle_rad=0.0415)  # Belle II: boosted
    proc = make_process(name, beam, mass_range=[0.5, 9.0], fsr=True)
    t, _ = proc.sample(np.random.default_rng(33), 20_000)
    assert t.k == 4
    assert "x_fsr" in t.extra
    assert np.abs(_sum_p4(t) - beam.p4_total_lab()).max() < 1e-9
    rad = t.npart == 4
    assert 0.05 < rad.mean() < 0.7
    assert np.all(t.pdg[rad, 3] == 22)
    assert np.all(t.parent[rad, 3] == -1)
    assert np.all((t.extra["x_fsr"] > 0) == rad)
    # f fbar gamma_FSR rebuild the gamma* mass; f fbar alone is lighter by sqrt(1 - x)
    m_star = _mass(t.p4[:, 0] + t.p4[:, 1] + np.where(rad[:, None], t.p4[:, 3], 0.0))
    assert np.abs(m_star - t.extra["m_true"]).max() < 1e-9 * 9.0
    m_ff = _mass(t.p4[:, 0] + t.p4[:, 1])
    x = t.extra["x_fsr"]
    assert np.allclose(m_ff, t.extra["m_true"] * np.sqrt(1 - x), rtol=1e-9, atol=1e-12)


def _p_photon(m, m_f, x_min):
    """P(x >= x_min) for the spin-1/2 density by quadrature; the part below x_min in closed form
    (int_0^x_min beta x^(beta-1) (1 - x + x^2/2) dx)."""
    b_f = fsr_exponent(m, m_f)
    x_max = 1 - 4 * m_f**2 / m**2
    dens = lambda x: b_f * x ** (b_f - 1) * 0.5 * (1 + (1 - x) ** 2)
    below = x_min**b_f - b_f * x_min ** (b_f + 1) / (b_f + 1) + b_f * x_min ** (b_f + 2) / (2 * (b_f + 2))
    above = integrate.quad(dens, x_min, x_max, epsrel=1e-10)[0]
    return above / (below + above)


def test_fraction_of_events_with_a_photon():
    """In a narrow mass window (p constant) the count of radiating events is binomial."""
    beam = Beam.symmetric(3.773)
    x_min, m_lo, m_hi = 1e-3, 2.0, 2.001
    proc = make_process("isr_ee", beam, mass_range=[m_lo, m_hi], fsr=True, fsr_x_min=x_min)
    n = 100_000
    t, _ = proc.sample(np.random.default_rng(34), n)
    p = _p_photon(0.5 * (m_lo + m_hi), M_E, x_min)
    k = int((t.npart == 4).sum())
    assert abs(k - n * p) < 4 * math.sqrt(n * p * (1 - p))


def test_fsr_off_is_the_default_and_unchanged():
    beam = Beam.symmetric(3.773)
    a, _ = make_process("isr_mumu", beam, mass_range=[1.5, 3.4]).sample(np.random.default_rng(5), 1000)
    b, _ = make_process("isr_mumu", beam, mass_range=[1.5, 3.4], fsr=False).sample(np.random.default_rng(5), 1000)
    assert a.k == 3
    assert "x_fsr" not in a.extra
    assert np.array_equal(a.p4, b.p4)


@pytest.mark.parametrize(("params", "field"), [({"fsr": "yes"}, "fsr"), ({"fsr": 1}, "fsr"),
                                               ({"fsr": True, "fsr_x_min": 0.0}, "fsr_x_min"),
                                               ({"fsr": True, "fsr_x_min": 0.5}, "fsr_x_min")])
def test_bad_fsr_parameters(params, field):
    with pytest.raises(ConfigError, match=rf"^{field} = .*allowed"):
        make_process("isr_mumu", Beam.symmetric(3.773), mass_range=[1.5, 3.4], **params)


def test_pions_radiate_less_than_muons_less_than_electrons():
    assert fsr_exponent(1.0, M_PI) < fsr_exponent(1.0, M_MU) < fsr_exponent(1.0, M_E)


def test_darkphoton_with_fsr_photon_at_the_decay_vertex():
    beam = Beam(e_minus_GeV=7.0, e_plus_GeV=4.0, crossing_half_angle_rad=0.0415)
    proc = make_process("darkphoton", beam, mass=0.017, epsilon=1e-3, decay="ee", fsr=True)
    t, _ = proc.sample(np.random.default_rng(35), 20_000)
    assert t.k == 5
    # A' = l- + l+ (+ gamma_FSR) exactly; the photon is an A' daughter at the decay vertex
    rad = t.npart == 5
    assert 0.02 < rad.mean() < 0.5
    daughters = t.p4[:, 2] + t.p4[:, 3] + np.where(rad[:, None], t.p4[:, 4], 0.0)
    assert np.abs(daughters - t.p4[:, 0]).max() < 1e-12
    assert np.all(t.parent[rad, 4] == 0)
    assert np.all(t.pdg[rad, 4] == 22)
    assert np.array_equal(t.vtx[rad, 4], t.vtx[rad, 2])
    # initial state: A' + ISR photon = beams
    assert np.abs(t.p4[:, 0] + t.p4[:, 1] - beam.p4_total_lab()).max() < 1e-9
    # the rate at 17 MeV (beta_f = 0.028): binomial; the Breit-Wigner width is negligible
    p = _p_photon(0.017, M_E, 1e-4)
    assert abs(rad.sum() - t.n * p) < 4 * math.sqrt(t.n * p * (1 - p))


def test_fsr_events_survive_the_file_round_trip(tmp_path):
    """generate --fsr then simulate == generate --fsr --detector (k = 4 truth lists via Parquet)."""
    import pyarrow.parquet as pq

    from isrsim.detector import load_detector
    from isrsim.runner import RunSpec, run, simulate_file

    det = load_detector("besiii")
    params = {"mass_range": [1.5, 3.4], "fsr": True}
    common = dict(process="isr_ee", params=params, beam=det.beam, seed=3, n_events=5000, progress=False)
    run(RunSpec(output=tmp_path / "one.parquet", detector=det, **common))
    run(RunSpec(output=tmp_path / "truth.parquet", **common))
    simulate_file(tmp_path / "truth.parquet", det, tmp_path / "two.parquet")
    a, b = pq.read_table(tmp_path / "one.parquet"), pq.read_table(tmp_path / "two.parquet")
    assert max(len(x) for x in a.column("truth").to_pylist()) == 4
    for col in ("truth", "gen", "tracks", "photons"):
        assert a.column(col).equals(b.column(col)), col


@pytest.mark.parametrize(("name", "m_f"), [("isr_mumu", M_MU), ("isr_pipi", M_PI)])
def test_both_fermions_stay_on_shell_with_fsr(name, m_f):
    """Each of f and fbar keeps its mass after the FSR photon is emitted (the pair recoils
    against the photon with velocity -k/(M - E_gamma) in the gamma* frame). The invariant-mass
    checks above are blind to a wrong recoil boost of f, because fbar is built by momentum
    conservation: only fbar's own mass shows it. Independent value: the PDG mass; tolerance
    from rounding in E^2 - p^2 at E <= 7 GeV (1e-13 E^2 in m^2, 5e-12 GeV^2). Only events with
    a photon (x_fsr > 0) test anything; boosting f with -k/M instead of -k/(M - E_gamma) puts
    fbar off shell by up to 0.09 (pions) and 0.7 GeV^2 (muons)."""
    beam = Beam(e_minus_GeV=7.0, e_plus_GeV=4.0, crossing_half_angle_rad=0.0415)
    proc = make_process(name, beam, mass_range=[0.9, 3.0], fsr=True, fsr_x_min=1e-3)
    t, _ = proc.sample(np.random.default_rng(34), 5_000)
    rad = t.extra["x_fsr"] > 0
    assert rad.sum() > 200
    for j in (0, 1):
        p = t.p4[:, j]
        m2 = p[:, 3] ** 2 - (p[:, :3] ** 2).sum(-1)
        np.testing.assert_allclose(m2, m_f**2, atol=1e-13 * p[:, 3].max() ** 2)
