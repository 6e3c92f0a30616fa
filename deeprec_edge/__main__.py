"""``python -m deeprec_edge`` runs the ``deeprec-edge`` command."""
import sys

from .cli import main

sys.exit(main())
