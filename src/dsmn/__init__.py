"""dsmn: low-complexity acoustic scene classification, from TAU-format audio to int8 deployment."""

__version__ = "0.1.0"
