"""`python -m src.explorer`: start the explorer (src/explorer/app.py)."""

import sys

from src.explorer.app import main

sys.exit(main())
