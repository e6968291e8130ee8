"""The errors attnx raises. Every message says what was expected and what was found."""


class AttnxError(Exception):
    """Base class: an error a user can act on, printed without a traceback by the CLI."""


class AttributeValueError(AttnxError, ValueError):
    """An op attribute has the wrong type or a value outside what the op allows."""


class InputError(AttnxError, ValueError):
    """A tensor given to an op or model has the wrong rank, shape or dtype."""


class ModelNotFoundError(AttnxError, LookupError):
    """A model name is neither a zoo entry nor a `path/file.py:factory` reference."""


class ModelFactoryError(AttnxError):
    """A `path/file.py:factory` cannot be imported, raises, or returns other than (module, example_inputs)."""


class OnnxFileError(AttnxError):
    """An ONNX file cannot be read, or is not what the command needs."""


class ExportError(AttnxError):
    """torch → ONNX export failed or produced a graph attnx will not hand on."""


class OutputWriteError(AttnxError):
    """An output file could not be written: no room on the disk, a file-size limit, a read-only folder."""


class BackendUnavailableError(AttnxError):
    """A runtime or tool the command needs (TensorRT, a dtype kernel) is not available here."""
