"""NixFleet: a fleet manager for NixOS and macOS hosts."""

__version__ = "0.1.0"
