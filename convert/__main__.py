"""``python -m convert {train,evaluate,export,snapshots}``."""

from convert.cli import main

raise SystemExit(main())
