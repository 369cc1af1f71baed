"""``python -m nd2gpu``: the ``nd2gpu`` command line."""

from nd2gpu.cli import entry

raise SystemExit(entry())
