"""Kept for old instructions: the same as `python -m fedcore deploy` (see its --help)."""

import sys

from fedcore.deploy.command import main

if __name__ == "__main__":
    sys.exit(main())
