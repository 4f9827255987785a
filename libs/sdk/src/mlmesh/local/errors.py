"""Errors of the local infrastructure manager."""

from __future__ import annotations


class InfraError(Exception):
    """One-line, user-facing message naming the problem and a hint.

    `details` optionally carries multi-line context (such as a log tail) for verbose output; the
    message itself stays one line so the CLI can print it as-is.
    """

    def __init__(self, message: str, *, details: str = "") -> None:
        super().__init__(" ".join(message.split()))
        self.details = details
