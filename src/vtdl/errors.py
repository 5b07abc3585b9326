"""The one exception type for bad user input.

Anything the user can fix (a corrupt video, a wrong split file, a bad parameter, a missing path)
raises `VtdlError` with a message that names the file, line or key. The CLI prints it as one
clean line and exits with status 2; every other exception is a bug and keeps its traceback.
"""


class VtdlError(Exception):
    """A problem with the user's input, reported as one clear message."""
