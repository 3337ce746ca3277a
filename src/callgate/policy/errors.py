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
    """

    def __init__(self, errors: tuple[PolicyIssue, ...], *, malformed_json: bool = False) -> None:
        self.errors = errors
        self.malformed_json = malformed_json
        count = len(errors)
        summary = "; ".join(str(issue) for issue in errors[:3])
        more = f" (and {count - 3} more)" if count > 3 else ""
        super().__init__(f"invalid policy document, {count} error(s): {summary}{more}")
