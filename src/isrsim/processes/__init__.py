"""Event generators. ``make_process(name, beam, **params)`` builds one by name."""

from __future__ import annotations

import importlib
from typing import Any

from ..exceptions import ConfigError

__all__ = ["PROCESS_NAMES", "get_process", "make_process"]

#: process name -> "module:Class" (imported lazily: importing isrsim compiles nothing)
_REGISTRY = {
    "isr_mumu": "isrsim.processes.isr:IsrMuMu",
    "isr_ee": "isrsim.processes.isr:IsrEE",
    "isr_pipi": "isrsim.processes.isr:IsrPiPi",
    "isr_bhabha": "isrsim.processes.isr:IsrBhabha",
    "darkphoton": "isrsim.processes.darkphoton:DarkPhoton",
    "diphoton": "isrsim.processes.diphoton:DiPhoton",
}
PROCESS_NAMES = tuple(_REGISTRY)


def get_process(name: str) -> type:
    """The process class registered under ``name``."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        msg = f"process = {name!r} is unknown: allowed {', '.join(PROCESS_NAMES)}"
        raise ConfigError(msg) from None
    module, cls = target.split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:  # a process not yet available in this build
        msg = f"process = {name!r} is not available in this installation ({exc})"
        raise ConfigError(msg) from None


def make_process(name: str, beam: Any, **params: Any) -> Any:
    """Instantiate process ``name`` for ``beam`` with validated ``params``."""
    return get_process(name)(beam, **params)
