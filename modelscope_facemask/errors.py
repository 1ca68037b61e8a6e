"""Exception types a caller can catch. Every message names the offending input and the fix."""


class FaceMaskError(Exception):
    """Base class of every error raised on purpose by modelscope-facemask."""


class ImageLoadError(FaceMaskError, ValueError):
    """An input image could not be read or has an unsupported type, shape or dtype."""


class CheckpointError(FaceMaskError, ValueError):
    """A weights file is missing, unreadable, or does not match the network (keys or shapes)."""


class ConfigurationError(FaceMaskError, ValueError):
    """A configuration.json or keyword argument holds an unsupported value."""


class DeviceError(FaceMaskError, RuntimeError):
    """The requested device does not exist on this machine."""


class AssetError(FaceMaskError, RuntimeError):
    """A test/demo asset could not be fetched from the package registry."""


class AlignmentError(FaceMaskError, ValueError):
    """Landmarks cannot be aligned (wrong shape, or degenerate points such as coinciding landmarks)."""
