"""The NumPy baseline does the same work as isrsim (``python -m pytest benchmarks/test_baseline_equivalence.py``).

The statistical comparisons use a fixed seed; each row's tolerance is |z| < 5 where z is the
difference divided by its standard error (binomial for fractions, sigma/sqrt(N) for means,
the 4th-moment error of the sample width for widths): with ~70 comparisons the chance that a
correct baseline fails is ~70 x 5.7e-7 ~ 4e-5.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from numpy_baseline import (  # noqa: E402
    NumpyDetector,
    NumpyIsrMuMu,
    check_equivalence,
    numpy_chunk_to_table,
)

from isrsim.detector import load_detector  # noqa: E402
from isrsim.detector.simulate import simulate  # noqa: E402
from isrsim.io import chunk_to_table  # noqa: E402
from isrsim.processes import make_process  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    det = load_detector("belle2")
    return det, make_process("isr_mumu", det.beam, mass_range=[0.3, 10.0])


def test_distributions_agree(setup):
    det, proc = setup
    rows = check_equivalence(det, proc, 100_000, seed=2024)
    bad = [(r["check"], r["isrsim"], r["numpy"], r["z"]) for r in rows if not r["ok"]]
    assert not bad
    assert len(rows) > 60


def test_same_output_layout(setup):
    """Same RecoChunk shapes/dtypes and the same Arrow schema as isrsim's pipeline."""
    det, proc = setup
    rng = np.random.default_rng(5)
    base, nd = NumpyIsrMuMu(proc), NumpyDetector(det)
    tb = nd.add_primary_vertex(base.sample_truth(rng, 2000), rng)
    rb = nd.simulate(tb, rng)
    ta, _ = proc.sample(rng, 2000)
    ra = simulate(ta, det, rng)
    for name in ("ntrk", "charge", "helix", "cov", "trk_truth", "nphot", "phot", "phot_truth"):
        a, b = getattr(ra, name), getattr(rb, name)
        assert (a.shape, a.dtype) == (b.shape, b.dtype), name
    assert {k: (v.shape, v.dtype) for k, v in ra.track_extra.items()} == \
        {k: (v.shape, v.dtype) for k, v in rb.track_extra.items()}
    assert chunk_to_table(ta, 0, "isr_mumu", ra).schema.equals(chunk_to_table(tb, 0, "isr_mumu", rb).schema)
    # padding slots stay at isrsim's defaults
    pad = np.arange(rb.helix.shape[1])[None, :] >= rb.ntrk[:, None]
    assert np.all(rb.trk_truth[pad] == -1) and np.all(rb.helix[pad] == 0.0)
    # the ordering of objects follows the truth order, as in the isrsim kernel
    t = rb.trk_truth
    assert np.all((rb.ntrk < 2) | (t[:, 0] < t[:, 1]))


def test_numpy_conversion_gives_the_same_table(setup):
    """The baseline's NumPy Arrow conversion produces exactly isrsim's table (values and schema)."""
    det, proc = setup
    rng = np.random.default_rng(6)
    truth, _ = proc.sample(rng, 3000)
    reco = simulate(truth, det, rng)
    assert (reco.ntrk == 0).any() and (reco.ntrk == 2).any() and (reco.nphot > 0).any()
    for r in (None, reco):
        assert numpy_chunk_to_table(truth, 17, "isr_mumu", r).equals(chunk_to_table(truth, 17, "isr_mumu", r))
