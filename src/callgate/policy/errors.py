"""The policy layer's error: a rejected document, with every problem located."""

from __future__ import annotations

from dataclasses import dataclass

Location = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    """One problem in a document: where it is (``("groups", "sales", 3)``) and what is wrong."""

    loc: Location
    message: str

    def to_json(self) -> dict[str, object]:
        return {"loc": list(self.loc), "message": self.message}

    def __str__(self) -> str:
        where = format_location(self.loc)
        if self.message.startswith(f"{where} "):
            return self.message  # the sentence already says where
        return f"{where}: {self.message}"


def format_location(loc: Location) -> str:
    """``("groups", "sales", 3)`` -> ``groups.sales[3]``; the document itself is ``(document)``."""
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return where.removeprefix(".") or "(document)"


class PolicyValidationError(ValueError):
    """A document that breaks ``policy.md``; ``errors`` lists every problem found.

    ``malformed_json`` is true when the input was not JSON at all (the HTTP API answers 400 for
    that, 422 for a JSON value that is not a valid document).

    ``subject`` names what was rejected in the exception's text: the settings and the grants beside
    the document (``call_control_settings``, ``grants``) are rejected with this error too.
    """

    def __init__(
        self,
        errors: tuple[PolicyIssue, ...],
        *,
        malformed_json: bool = False,
        subject: str = "policy document",
    ) -> None:
        self.errors = errors
        self.malformed_json = malformed_json
        count = len(errors)
        summary = "; ".join(str(issue) for issue in errors[:3])
        more = f" (and {count - 3} more)" if count > 3 else ""
        super().__init__(f"invalid {subject}, {count} error(s): {summary}{more}")
