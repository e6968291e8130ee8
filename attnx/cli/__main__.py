"""`python -m attnx.cli`: the `attnx` command."""

import sys

from attnx.cli.main import main

sys.exit(main())
