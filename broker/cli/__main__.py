"""``python -m broker.cli``: the ``broker`` command."""

from broker.cli import main

raise SystemExit(main())
