"""The one place that sets isrsim's JIT policy.

``kernel`` compiles lazily (no explicit signatures, so importing isrsim stays cheap),
caches to disk, releases the GIL and uses NumPy's floating-point error model (division
by zero gives inf/NaN instead of raising: inputs are validated before kernels run).
``fastmath`` stays off: it changes NaN/inf semantics and results across CPUs.

``kernel_inline`` is the same, inlined into its callers at numba's IR level: for large helpers
that take arrays or a ``Generator`` and are called per particle. A compiled call to them
increfs and decrefs every array argument and the generator (NRT atomic operations, ~3 ns each;
measured: ~37 ns per call of the bremsstrahlung walk with five arrays) that inlining removes.
"""

from __future__ import annotations

import numba

__all__ = ["kernel", "kernel_inline"]

kernel = numba.njit(cache=True, nogil=True, error_model="numpy")
kernel_inline = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
