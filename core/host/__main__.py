"""`python3 -m core.host HOME NAME [--resume]`: run a colony host (see core.host.server)."""

import sys

from core.host.server import main

sys.exit(main())
