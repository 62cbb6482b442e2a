"""vhostmd: the Virtual Host Metrics Daemon (a compatible reimplementation)."""

__version__ = "2.0.0"
