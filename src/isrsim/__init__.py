"""isrsim: fast toy event generator and parameterised detector simulation for dark-photon
searches in initial-state-radiation events at e+e- colliders (BESIII, Belle II)."""

from __future__ import annotations

__version__ = "0.1.0"
#: Version of the Parquet event schema written by this isrsim (major.minor).
SCHEMA_VERSION = "1.0"

__all__ = ["SCHEMA_VERSION", "__version__"]
