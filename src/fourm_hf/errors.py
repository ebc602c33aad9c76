"""The package's one exception class of its own.

A value of the wrong type (``greedy="False"``, ``hidden_size="128"``, bool ``input_ids``) is a
:class:`WrongTypeError`: a ``TypeError``, as Python and transformers raise for a wrong type, that
is also a ``ValueError``, so code written to catch every bad input with ``except ValueError`` (the
CLI, the demos) still catches it.
"""


class WrongTypeError(TypeError, ValueError):
    """A value of the wrong type; the message names the field and what it accepts."""


__all__ = ["WrongTypeError"]
