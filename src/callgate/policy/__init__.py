"""callgate's policy core: the document, its validation, its compiled form and ``decide()``.

Pure and synchronous: no I/O, and no imports from the rest of callgate (a test holds that line).
"""

from callgate.policy.compiled import CompiledPolicy, compile_policy
from callgate.policy.decide import decide
from callgate.policy.document import PolicyDocument
from callgate.policy.errors import PolicyIssue, PolicyValidationError
from callgate.policy.parse import parse_document
from callgate.policy.syntax import is_valid_client_id, is_valid_extension
from callgate.policy.types import ALL_TARGETS, Action, Decision, Reason

__all__ = [
    "ALL_TARGETS",
    "Action",
    "CompiledPolicy",
    "Decision",
    "PolicyDocument",
    "PolicyIssue",
    "PolicyValidationError",
    "Reason",
    "compile_policy",
    "decide",
    "is_valid_client_id",
    "is_valid_extension",
    "parse_document",
]
