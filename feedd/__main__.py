"""``python -m feedd`` runs the service, like the ``feedd`` command."""

import sys

from feedd.cli import main

sys.exit(main())
