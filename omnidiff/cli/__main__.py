"""``python -m omnidiff.cli``: the omnidiff command (what torchrun and srun launch: ``torchrun
... -m omnidiff.cli train ...``)."""

import sys

from omnidiff.cli.commands import main

sys.exit(main())
