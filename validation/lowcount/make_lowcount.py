"""Coverage of the 90 % CL upper limits at low counts: asymptotic formulae against toys.

Run: python validation/lowcount/make_lowcount.py  (writes lowcount_coverage.png and README.md)

A counting experiment with a known background b: for every count n that matters the limit
UL(n) of each method is computed once, and the coverage at a true signal mu is then exact,
C(mu) = sum over n with UL(n) >= mu of Poisson(n | mu + b) (no pseudo-experiments for the
coverage itself; the toy methods use pseudo-experiments for their limits).

Second part: the same with a log-normal efficiency uncertainty u (signal mu e^(u theta), theta
constrained by a unit-Gaussian global observable g). Shifting theta by g shows that the limit
of data (n, g) is UL(n, 0) e^(-u g), so at a true (mu, theta_t) the coverage is again exact:
C = sum_n Poisson(n | mu e^(u theta_t) + b) Phi(ln(UL(n, 0) / mu) / u - theta_t).
Third part: a sparse 30-bin spectrum with a fitted linear background and a 10 % signal
normalisation uncertainty, coverage from pseudo-data (the only part with a statistical error).
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

import isrsim
from isrsim.stats import Channel, Histogram, counting_toy_upper_limit, counting_upper_limit, toy_upper_limit
from isrsim.stats.limits import gaussian_shape

OUT = Path(__file__).resolve().parent
BACKGROUNDS = (0.5, 3.0, 10.0)
N_TOYS = 1500
#: (b, method) -> counts whose toy limit is flagged (too few pseudo-experiments in the tail)
flagged: dict[tuple[float, str], list[int]] = {}
METHODS = ("qtilde_asymptotic", "cls_asymptotic", "qtilde_toys", "cls_toys")
STYLE = {"qtilde_asymptotic": ("C0", "--"), "cls_asymptotic": ("C1", "--"),
         "qtilde_toys": ("C0", "-"), "cls_toys": ("C1", "-")}


def limits(b: float, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    ns = np.arange(0, int(b + 8 * np.sqrt(b) + 16))
    ul, err = {}, {}
    for m in METHODS:
        if m.endswith("toys"):
            rs = [counting_toy_upper_limit(int(n), b, method=m, n_toys=N_TOYS,
                                           rng=np.random.default_rng([seed, int(n)]))
                  for n in ns]
            ul[m] = np.array([r.upper_limit for r in rs])
            err[m] = np.array([r.toy_error for r in rs])
            flagged[(b, m)] = [int(n) for n, r in zip(ns, rs) if not r.converged]
        else:
            ul[m] = np.array([counting_upper_limit(int(n), b, convention=m).upper_limit for n in ns])
    return ns, ul, err


def coverage(ns: np.ndarray, ul: np.ndarray, mus: np.ndarray, b: float) -> np.ndarray:
    """Exact coverage; counts above ns[-1] have limits far above every mu shown and cover."""
    pmf = stats.poisson.pmf(ns[None, :], mus[:, None] + b)
    return np.sum(pmf * (ul[None, :] >= mus[:, None]), axis=1) + stats.poisson.sf(ns[-1], mus + b)


#: efficiency uncertainties and true nuisance values of the second part (b = NUIS_B)
NUIS_B = 1.0
NUIS_UNCS = (0.0, 0.1, 0.3)
THETA_TRUE = (-1.0, 0.0, 1.0)
TOY_METHODS = ("qtilde_toys", "cls_toys")
#: sparse spectrum of the third part: true signal yield, pseudo-data, pseudo-experiments per limit
SPARSE_SIGNAL, SPARSE_PSEUDO, SPARSE_TOYS = 2.5, 200, 400


def nuisance_coverage(mus: np.ndarray) -> tuple[list[tuple], plt.Figure]:
    """Exact coverage with an efficiency uncertainty (module docstring), per u, method, theta_t."""
    ns = np.arange(0, 30)
    rows = []
    fig, axes = plt.subplots(1, len(NUIS_UNCS), figsize=(5 * len(NUIS_UNCS), 4.2), sharey=True)
    for k, (ax, u) in enumerate(zip(axes, NUIS_UNCS)):
        for m in TOY_METHODS:
            ul = np.array([counting_toy_upper_limit(int(n), NUIS_B, method=m, n_toys=N_TOYS,
                                                    efficiency_unc=u,
                                                    rng=np.random.default_rng([200 + k, int(n)])).upper_limit
                           for n in ns])
            ul = np.where(np.isfinite(ul), ul, 0.0)
            for th, ls in zip(THETA_TRUE, (":", "-", "--")):
                pmf = stats.poisson.pmf(ns[None, :], mus[:, None] * np.exp(u * th) + NUIS_B)
                with np.errstate(divide="ignore"):
                    lr = np.log(ul[None, :] / mus[:, None])
                p_cover = (lr >= 0).astype(float) if u == 0 else stats.norm.cdf(lr / u - th)
                c = np.sum(pmf * p_cover, axis=1)
                core = (mus >= 0.5) & (mus <= 10.0)
                rows.append((u, m, th, float(np.min(c[core])), float(np.mean(c[core] < 0.9)),
                             float(np.median(c[core]))))
                if u == 0 and th != 0:
                    continue
                ax.plot(mus, c, color=STYLE[m][0], ls=ls, lw=1.1,
                        label=f"{m}" + ("" if u == 0 else f", theta_t = {th:+g}"))
        ax.axhline(0.9, color="k", lw=0.8)
        ax.set_title(f"b = {NUIS_B:g}, efficiency uncertainty {u:g}")
        ax.set_xlabel("true signal mu [events]")
        ax.set_ylim(0.5, 1.0)
        ax.legend(loc="lower right", fontsize=7)
    axes[0].set_ylabel("coverage of the 90% CL upper limit")
    fig.tight_layout()
    return rows, fig


def sparse_coverage() -> tuple[float, float, float]:
    """Coverage of the q~ toy limit on a sparse spectrum (pseudo-data): (coverage, error, median UL)."""
    edges = np.linspace(1.0, 1.3, 31)
    x = 0.5 * (edges[1:] + edges[:-1])
    b = 0.3 * (1.2 - 0.6 * (x - 1.0) / 0.3)
    shape = np.asarray(gaussian_shape(edges[:-1], edges[1:], 1.15, 0.012))
    rng = np.random.default_rng(31)
    uls = []
    for i in range(SPARSE_PSEUDO):
        signal = SPARSE_SIGNAL * np.exp(0.1 * rng.standard_normal())
        n = rng.poisson(b + signal * shape).astype(float)
        ch = Channel(Histogram(edges, n, n.copy(), np.ones(n.size, dtype=bool)), sigma_m=0.012,
                     norm_unc=0.1, order=1)
        uls.append(toy_upper_limit(ch, 1.15, rng=np.random.default_rng([32, i]), method="qtilde_toys",
                                   n_toys=SPARSE_TOYS).upper_limit)
    c = float(np.mean(np.array(uls) >= SPARSE_SIGNAL))
    return c, float(np.sqrt(c * (1 - c) / SPARSE_PSEUDO)), float(np.median(uls))


def main() -> None:
    t0 = time.perf_counter()
    mus = np.linspace(0.05, 12.0, 2400)
    fig, axes = plt.subplots(1, len(BACKGROUNDS), figsize=(5 * len(BACKGROUNDS), 4.2), sharey=True)
    rows, n0, nans = [], [], {}
    for ax, (k, b) in zip(axes, enumerate(BACKGROUNDS)):
        ns, ul, err = limits(b, 100 + k)
        for m in METHODS:
            c = coverage(ns, ul[m], mus, b)
            col, ls = STYLE[m]
            ax.plot(mus, c, color=col, ls=ls, lw=1.2, label=m)
            core = (mus >= 0.5) & (mus <= 10.0)
            rows.append((b, m, float(np.min(c[core])), float(np.mean(c[core] < 0.9)),
                         float(np.median(c[core]))))
        bad = [int(n) for n in ns if not np.isfinite(ul["cls_toys"][n])]
        if bad:
            nans[b] = bad
        n0.append((b, {m: ul[m][0] for m in METHODS},
                   {m: err[m][0] for m in METHODS if m in err}))
        ax.axhline(0.9, color="k", lw=0.8)
        ax.set_title(f"counting experiment, known b = {b:g}")
        ax.set_xlabel("true signal mu [events]")
        ax.set_ylim(0.5, 1.0)
    axes[0].set_ylabel("coverage of the 90% CL upper limit")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "lowcount_coverage.png", dpi=110)
    plt.close(fig)
    nrows, fig = nuisance_coverage(mus)
    fig.savefig(OUT / "lowcount_nuisance_coverage.png", dpi=110)
    plt.close(fig)
    sparse_c, sparse_err, sparse_med = sparse_coverage()
    secs = time.perf_counter() - t0
    lines = [
        "# Upper limits at low counts: asymptotic formulae against pseudo-experiments", "",
        f"Generated by `python validation/lowcount/make_lowcount.py` (isrsim {isrsim.__version__}, "
        f"{N_TOYS} pseudo-experiments per tested mu, {secs:.0f} s).", "",
        "A single-bin counting experiment with a known background b. For every count n the limit "
        "UL(n) of each method is computed once; the coverage at a true signal mu is then exact, "
        "C(mu) = sum over n with UL(n) >= mu of Poisson(n | mu + b). Asymptotic: "
        "`isrsim.stats.counting_upper_limit` (q~_mu = 1.6424; CLs with the Asimov data set, "
        "arXiv:1007.1727). Toys: `isrsim.stats.counting_toy_upper_limit` (Neyman construction in "
        "q~_mu, `qtilde_toys`; CLs = CL_s+b / CL_b, `cls_toys`).", "",
        "![](lowcount_coverage.png)", "",
        "| b | method | min coverage, mu in 0.5-10 | fraction of mu with coverage < 0.90 | median coverage |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {b:g} | {m} | {lo:.3f} | {frac:.3f} | {med:.3f} |" for b, m, lo, frac, med in rows]
    lines += ["", "Limit for n = 0 (exact: CLs = e^-mu gives ln 10 = 2.303 for any b; the Neyman "
              "construction in q~ gives ln 10 - b, and nothing (a limit at 0) for b > ln 10):", "",
              "| b | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for b, u, e in n0:
        cells = [f"{u[m]:.3f}" + (f" +- {e[m]:.3f}" if m in e and np.isfinite(e[m]) else "") for m in METHODS]
        lines.append(f"| {b:g} | " + " | ".join(cells) + " |")
    lines += ["", "Toy limits flagged `converged = False` (fewer than 10 pseudo-experiments as extreme "
              "as the data at the limit; for n = 0, CL_b = e^-b): "
              + "; ".join(f"b = {b:g} {m}: n = {v}" for (b, m), v in flagged.items() if v)
              + ". They enter the coverage as computed, except nan limits (CLs without any b-only "
              "pseudo-experiment in the tail), which count as not covering: "
              + ("; ".join(f"b = {b:g}: n = {v}, P(n | b) = {stats.poisson.pmf(v, b).sum():.1e}"
                           for b, v in nans.items()) or "none") + "."]
    lines += ["", "Reading: the asymptotic limits under-cover at these counts (q~_mu down to the minima "
              "in the table, also CLs at b = 0.5); both toy methods cover. The remaining dips of the toy "
              "curves below 0.90 are narrow: they sit at the steps of C(mu), where a limit UL(n) lies "
              "below its exact value by its toy error (a few % with this many pseudo-experiments; "
              "`ToyUpperLimit.toy_error`). The exact counting limits are reproduced within that error "
              "in tests/stats/test_toylimits.py. Cost: 0.1-1 s per counting limit, a few s to tens of s "
              "per spectrum fit (sparse spectra need the barrier stages of the fit)."]
    lines += ["", "## With an efficiency uncertainty", "",
              f"b = {NUIS_B:g}, log-normal efficiency uncertainty u, exact coverage at the true "
              "nuisance values theta_t (formula in the script's docstring; the limit of data with "
              "global observable g is UL(n, 0) e^(-u g)). Pseudo-experiments whose counts equal the "
              "data's count as extreme whatever their global observables "
              "(`isrsim.stats.toylimits`): without that rule any u > 1e-5 gave the mid-p limit, "
              "with minimum coverages of 0.80 (q~) and 0.86 (CLs) at b = 1 (review 2026-11-22).", "",
              "![](lowcount_nuisance_coverage.png)", "",
              "| u | method | theta_t | min coverage, mu in 0.5-10 | fraction of mu with coverage < 0.90 "
              "| median coverage |", "|---|---|---|---|---|---|"]
    lines += [f"| {u:g} | {m} | {th:+g} | {lo:.3f} | {frac:.3f} | {med:.3f} |"
              for u, m, th, lo, frac, med in nrows if u > 0 or th == 0]
    lines += ["", "## Sparse spectrum with a normalisation uncertainty", "",
              f"30 bins over 1.0-1.3 GeV, a linear background of 0.36-0.18 events per bin fitted with "
              f"order 1, a Gaussian signal at 1.15 GeV (sigma 12 MeV) of {SPARSE_SIGNAL:g} events times "
              f"e^(0.1 theta_t), theta_t ~ N(0, 1) drawn per pseudo-data set, `norm_unc = 0.1`; "
              f"q~ toy limits ({SPARSE_TOYS} pseudo-experiments) of {SPARSE_PSEUDO} pseudo-data sets: "
              f"coverage {sparse_c:.3f} +- {sparse_err:.3f}, median limit {sparse_med:.2f} events. "
              "On a single data set the uncertainty can move the limit much more than 10 % (one with "
              "no event within 2 sigma_m of the mass: 0.80 -> 0.49 events, 600 pseudo-experiments): "
              "the global observables spread the q~ of the pseudo-experiments without events near "
              "the mass (q~ = 2 mu without it) across the data's value; coverage is kept."]
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
