"""``python -m falwrap.cli``: the same as the ``falwrap`` command."""

from falwrap.cli import main

raise SystemExit(main())
