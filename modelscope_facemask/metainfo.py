"""Every name this plugin registers with ModelScope's registries, in one place."""


class Models:
    """Model types (registry ``MODELS``, group ``Tasks.face_recognition``)."""

    facemask = "facemask"  # the name modelscope.metainfo.Models.facemask reserves; nothing else registers it


class Preprocessors:
    """Preprocessor types (registry ``PREPROCESSORS``, group ``Fields.cv``)."""

    facemask_preprocessor = "facemask-face-preprocessor"


class Pipelines:
    """Pipeline types (registry ``PIPELINES``, group ``Tasks.face_recognition``)."""

    facemask = "facemask-face-recognition"
    #: the built-in name the official hub card uses; ours replaces the built-in class once the plugin is imported
    builtin_facemask = "resnet-face-recognition-facemask"
