"""dsmn: low-complexity acoustic scene classification, from TAU-format audio to int8 deployment."""

__version__ = "0.1.0"

from dsmn.threads import set_passive_wait as _set_passive_wait

_set_passive_wait()  # before torch loads (dsmn's modules import it): idle OpenMP threads sleep, see dsmn.threads
