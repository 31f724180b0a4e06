"""`python -m tumor_predict`: the `tumor-predict` command."""

from __future__ import annotations

import sys

from tumor_predict.cli import main

if __name__ == "__main__":
    sys.exit(main())
