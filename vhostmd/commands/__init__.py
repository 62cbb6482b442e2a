"""The ``vhostmd`` subcommands other than the daemon itself (``status``, ``attach``, ``detach``)."""
