"""vhostmd: the Virtual Host Metrics Daemon (a compatible reimplementation)."""

__version__ = "0.1.0"
