"""The rule for the config repo's branch name, shared by the dashboard and the agent."""

from __future__ import annotations

import re

from nixfleet.core.errors import ValidationError

# A conservative subset of git's ref rules: no leading '-' (it would be read as an option by
# git), no '..', no control or shell-special characters, no trailing '/' or '.lock'.
_BRANCH = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]{1,200}(?<![/.])(?<!\.lock)$")


def check_branch(name: str) -> str:
    """Return name if it is a safe branch name, else raise ValidationError saying why."""
    if not _BRANCH.fullmatch(name):
        raise ValidationError(
            f"branch {name[:80]!r} is not accepted: use letters, digits, '.', '_', '-' and '/', "
            "not starting with '-' and without '..'"
        )
    return name
