"""vhostmd: the Virtual Host Metrics Daemon (a compatible reimplementation).

The package reads as the flow of one update (docs/architecture.md):
``config`` → ``collect/`` → ``render`` → ``publish/`` (the transports, opened
and kept by ``transports``), run by ``pipeline`` inside the ``daemon`` loop
that ``cli`` starts; ``commands/`` holds the other subcommands.
"""

__version__ = "2.0.0"
