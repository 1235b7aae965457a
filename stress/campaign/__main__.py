"""`python -m stress.campaign FD PARENT_PID`: a local pool's worker process."""

import sys

from stress.campaign.worker import main

raise SystemExit(main(sys.argv[1:]))
