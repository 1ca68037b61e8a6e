"""modelscope-facemask."""
from .version import __version__
