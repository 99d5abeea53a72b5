r"""``python -m captum_matex.cli`` (and ``torchrun -m captum_matex.cli``) runs :func:`main`."""

import sys

from captum_matex.cli import main

sys.exit(main())
