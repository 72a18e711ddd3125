"""User-facing errors. The CLI prints these as one line and exits with code 2; anything else is a bug."""

from __future__ import annotations


class ListopdError(Exception):
    """An error caused by the user's input (arguments, files, configs), not by a bug in listopd."""


class DomainError(ListopdError, ValueError):
    """A numeric argument outside the domain where a formula is defined (e.g. p outside (0, 1))."""


class InputError(ListopdError, ValueError):
    """A problem in an input file, located by file, line and field where those are known."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.path, self.line, self.field, self.reason = path, line, field, message
        where = ""
        if path is not None:
            where = str(path) + (f":{line}" if line is not None else "")
        if field is not None:
            where = f"{where}: field '{field}'" if where else f"field '{field}'"
        super().__init__(f"{where}: {message}" if where else message)
