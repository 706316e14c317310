"""The one place that sets isrsim's JIT policy.

``kernel`` compiles lazily (no explicit signatures, so importing isrsim stays cheap),
caches to disk, releases the GIL and uses NumPy's floating-point error model (division
by zero gives inf/NaN instead of raising: inputs are validated before kernels run).
``fastmath`` stays off: it changes NaN/inf semantics and results across CPUs.
"""

from __future__ import annotations

import numba

__all__ = ["kernel"]

kernel = numba.njit(cache=True, nogil=True, error_model="numpy")
