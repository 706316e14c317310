"""Physical constants and particle properties in isrsim's base units (GeV, cm, ns, nb).

Values: CODATA 2018 / PDG 2022 Review of Particle Physics (the same constants as
``shared/physics.md``, which quotes them as its inputs).
"""

from __future__ import annotations

import math

__all__ = [
    "ALPHA",
    "C_CM_PER_NS",
    "HBARC2_GEV2_NB",
    "HBARC_GEV_CM",
    "HBAR_GEV_NS",
    "K_CURV",
    "M_E",
    "M_MU",
    "M_PI",
    "M_TAU",
    "PDG_E",
    "PDG_GAMMA",
    "PDG_MU",
    "PDG_PI",
    "PDG_APRIME",
    "ZETA2",
    "ZETA3",
    "lepton_mass",
]

#: Fine-structure constant alpha(0) (CODATA 2018).
ALPHA = 1.0 / 137.035999084
#: Electron mass [GeV] (PDG 2022).
M_E = 0.51099895e-3
#: Muon mass [GeV] (PDG 2022).
M_MU = 0.1056583755
#: Charged-pion mass [GeV] (PDG 2022).
M_PI = 0.13957039
#: Tau mass [GeV] (PDG 2022).
M_TAU = 1.77686
#: (hbar c)^2 [GeV^2 nb] (PDG 2022: 0.3893793721 mb GeV^2).
HBARC2_GEV2_NB = 0.3893793721e6
#: hbar c [GeV cm] (PDG 2022: 197.3269804 MeV fm).
HBARC_GEV_CM = 1.973269804e-14
#: hbar [GeV ns] (PDG 2022: 6.582119569e-25 GeV s).
HBAR_GEV_NS = 6.582119569e-16
#: Speed of light [cm/ns].
C_CM_PER_NS = 29.9792458
#: Curvature constant: p_T [GeV] = K_CURV * B [T] * R [cm]  (0.299792458 GeV/(T m)).
K_CURV = 0.299792458e-2

ZETA2 = math.pi**2 / 6.0
ZETA3 = 1.2020569031595942

# PDG Monte Carlo particle numbers (particle, not antiparticle).
PDG_E = 11
PDG_MU = 13
PDG_PI = 211
PDG_GAMMA = 22
#: isrsim's code for the dark photon A' (PDG reserves 32 for Z'/A'-like states; 4900022
#: is used by some generators; isrsim follows MadGraph HAHM and uses 1023).
PDG_APRIME = 1023


#: Largest CM energy [GeV] the generators and physics functions accept (run card sqrt_s, beams).
SQRT_S_MAX = 1000.0

def lepton_mass(flavour: str) -> float:
    """Mass [GeV] of the final-state particle named ``"e"``, ``"mu"``, ``"pi"`` or ``"tau"``."""
    masses = {"e": M_E, "mu": M_MU, "pi": M_PI, "tau": M_TAU}
    try:
        return masses[flavour]
    except KeyError:
        msg = f"unknown final-state flavour {flavour!r}; allowed: {sorted(masses)}"
        raise ValueError(msg) from None
