"""``python -m nd2gpu``: the ``nd2gpu`` command line."""

from nd2gpu._cli import main

raise SystemExit(main())
