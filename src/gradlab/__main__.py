"""``python -m gradlab`` runs the ``gradlab`` command."""
import sys

from gradlab.cli.main import main

sys.exit(main())
