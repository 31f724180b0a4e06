"""`python -m search` is the `tumor-search` command."""

from __future__ import annotations

from search.cli import main

raise SystemExit(main())
