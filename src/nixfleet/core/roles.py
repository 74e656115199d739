"""Who may do what: the three roles, ordered, and the user-name rule.

A role includes everything the roles below it may do, so a check is one comparison.
"""

from __future__ import annotations

import re
from enum import IntEnum

from nixfleet.core.errors import ValidationError

# Like host IDs, plus dots and underscores people use in names; never ":" (that marks
# the labels of unknown names and tokens in the logs) and never spaces.
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class Role(IntEnum):
    VIEWER = 1  # reads everything but secrets
    OPERATOR = 2  # commands, plans, rollouts
    ADMIN = 3  # hosts, tokens, users, settings

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """Return the role named text, or raise ValidationError naming the three."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValidationError(
                f"roles: unknown role {text[:20]!r} (viewer, operator or admin)"
            ) from None


def canonical_username(name: str) -> str:
    """Return name lower-cased if it is a valid user name, else raise ValidationError."""
    folded = name.strip().lower()
    if not _USERNAME.match(folded):
        raise ValidationError(
            "users: a user name is 1-63 letters, digits, '.', '_' or '-', starting with a"
            " letter or digit"
        )
    return folded
