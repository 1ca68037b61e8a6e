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


class AssetUnavailableError(AssetError):
    """The package registry could not be reached (pip failed or timed out) and no offline copy was given."""


class AssetIntegrityError(AssetError):
    """A fetched or offline asset does not match its pinned sha256 or does not hold what the pin describes."""


class AssetCacheError(AssetError):
    """The asset cache folder ($FACEMASK_CACHE) cannot be created or written."""


class EmbeddingError(FaceMaskError, RuntimeError):
    """The recognizer produced a non-finite embedding (NaN or Inf) for a face; it is never returned."""


class UnknownOptionError(ConfigurationError, TypeError):
    """A keyword argument the pipeline does not know (per call); the message names the closest option."""


class OutputFolderError(FaceMaskError, ValueError):
    """An output folder exists and is not provably an unchanged earlier output of this package: never replaced."""


class OutputPathError(FaceMaskError, ValueError):
    """An output file the command line would write is one of the command's inputs, lies inside a folder it reads or
    writes (a gallery, a rows folder, a model), or exists and ``--overwrite`` was not given: nothing was written."""


class ModelSourceError(FaceMaskError, ValueError):
    """A model or detector argument names neither an existing local folder nor a usable hub id 'owner/name'."""


class HubDownloadError(ModelSourceError):
    """The ModelScope hub could not provide a model (unknown id, server error, failed or corrupt download); chained
    to ModelScope's own exception."""


class FacePreparationError(FaceMaskError, RuntimeError):
    """Face detection or alignment failed unexpectedly for one image (chained to the cause); other images go on."""


class BatchOutOfMemoryError(FaceMaskError, RuntimeError):
    """A network ran out of device memory even on a batch of one (batches are halved and retried before that);
    chained to the out-of-memory error."""


class MissingExtraError(FaceMaskError, ImportError):
    """An optional extra (e.g. ``[gallery]`` for faiss, ``[ray]`` for Ray) is not installed; the message names the
    extra and the pip command that installs it."""


class GalleryFormatError(FaceMaskError, ValueError):
    """A folder is not a complete FaceMask gallery (missing or half-written files, files that do not match its
    manifest.json, an unsupported format version); the message names the folder and how to rebuild it."""


class GalleryMismatchError(FaceMaskError, ValueError):
    """A gallery was built with another recognizer (weights sha256) or another embedding contract than the model in
    use: its scores would be meaningless. The message names both hashes and the fix."""


class GalleryIdentityError(FaceMaskError, ValueError):
    """An identity asked for (e.g. to remove) is not in the gallery; nothing was changed."""


class EnrolmentSourceError(FaceMaskError, ValueError):
    """An enrolment or probe source (IDENTITY/*.jpg folder tree, path,identity CSV, Parquet face rows) cannot be
    used: missing columns, no identity folders, no images, rows without the model metadata."""


class FaceRowsError(FaceMaskError, ValueError):
    """A face-rows Parquet file or shard folder (``facemask embed --out DIR``) is unreadable, lacks the face-rows
    columns or metadata, or mixes runs of different models or embedding contracts."""


class VectorInputError(FaceMaskError, ValueError):
    """Vectors, ids, queries or k given to a vector index are unusable: wrong shape or dtype, non-finite or not unit
    length, duplicate ids, or ids already in the index. The message names the argument and the fix."""


class IndexFileError(FaceMaskError, ValueError):
    """A saved vector index file is missing, unreadable, truncated or corrupt, or is not an index this package
    writes (wrong index type, metric, dimension or ids); the message names the file and how to rebuild it."""


class GalleryLockError(FaceMaskError, RuntimeError):
    """Another process kept a gallery's writer lock (``G/.facemask-gallery.lock``) for longer than the lock
    timeout; nothing was changed. The message names the gallery, the process holding the lock and how to wait
    longer."""
