"""The one kind of error a user can fix: said as one line naming the record or field, exit 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (a source, params, an image, a model URI, a missing champion): its message
    names the record or field, and a CLI prints it as one line and exits 2, never a traceback."""

    exit_code = 2


class BadInput(UserError, ValueError):
    """A record, field or file the user gave is wrong; the message names it."""


class MissingInput(UserError, FileNotFoundError):
    """Something the command needs is not there (a data folder, a registered version)."""


class Refused(UserError):
    """The command ran and said no (a gate that fails, data that fails its expectations, a
    promotion that is not better): one line saying why, exit 1."""

    exit_code = 1
