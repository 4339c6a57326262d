"""``python -m deepyeast COMMAND ...`` = ``deepyeast COMMAND ...`` (see :mod:`deepyeast.commands`)."""

import sys

from deepyeast.commands import main

if __name__ == "__main__":
    sys.exit(main())
