"""Exceptions with one clear sentence for the user; the CLI prints them and exits non-zero."""


class MedgenError(Exception):
    """Base class: its message is shown to the user as a single line."""


class InputFileError(MedgenError, ValueError):
    """An input file is missing, of the wrong format, truncated or inconsistent (message names the file)."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ModelNotFoundError(MedgenError, FileNotFoundError):
    """A model (text encoder, pipeline) could not be found locally."""


class OutputExistsError(MedgenError, FileExistsError):
    """Refusing to overwrite an existing output without `overwrite=True`."""


class MissingExtraError(MedgenError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require_extra(module: str, extra: str):
    """`module` imported, or `MissingExtraError` saying ``pip install 'medgen[<extra>]'``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{module} is not installed; it comes with the `{extra}` extra: "
                                f"pip install 'medgen[{extra}]'") from None
