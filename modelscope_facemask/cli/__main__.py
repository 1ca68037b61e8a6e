"""``python -m modelscope_facemask.cli``."""
import sys

from . import main

sys.exit(main())
