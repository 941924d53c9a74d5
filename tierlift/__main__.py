"""``python -m tierlift``: the operator CLI."""

from tierlift.cli import main

raise SystemExit(main())
