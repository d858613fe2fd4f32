"""Checks that a verifier reports: the ledger's (``zhifu ledger verify``) and the
audit trail's (``zhifu audit verify``) share this shape, and the CLI prints both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# A report lists at most this many problems per check, and counts the rest.
PROBLEMS_SHOWN_MAX = 50


@dataclass(slots=True)
class Check:
    """One named check of a verification run and the problems it found."""

    name: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    def fail(self, message: str) -> None:
        self.ok = False
        self.problem_count += 1
        if len(self.problems) < PROBLEMS_SHOWN_MAX:
            self.problems.append(message)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "ok": self.ok,
            "problem_count": self.problem_count,
            "problems": self.problems,
        }


def all_ok(checks: Sequence[Check]) -> bool:
    return all(check.ok for check in checks)
