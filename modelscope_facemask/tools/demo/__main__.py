"""``python -m modelscope_facemask.tools.demo [--out DIR] [--hub-timeout S]`` (``facemask demo`` is the same)."""
import sys

from . import main

sys.exit(main())
