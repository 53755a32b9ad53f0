"""User-facing errors.

:class:`Sam3TrtError` carries a one-line message that names the bad input, its value and the fix; the
CLI prints it without a traceback and exits non-zero. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class Sam3TrtError(ValueError):
    """An error caused by the user's input or environment, with a message that says how to fix it.

    A ``ValueError`` subclass, so code written against upstream ``Sam3Processor`` (which raises
    ``ValueError`` for bad calls) keeps catching it.
    """


class ParityError(Sam3TrtError):
    """A graph or backend disagrees with its reference beyond the stated tolerances."""
