"""`python -m netspec ...` and `torchrun ... -m netspec train ...` run the netspec command."""

import sys

from netspec.cli import main

sys.exit(main())
