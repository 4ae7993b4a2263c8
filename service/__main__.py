"""`python -m service`: the `tensorlens` command line (service/cli.py); with no command it
serves the API on the configured host and port."""

from __future__ import annotations

import sys

from service.cli import main

if __name__ == "__main__":
    sys.exit(main())
