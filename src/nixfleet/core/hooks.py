"""Deploy on push: what a forge's push delivery says, and the verdicts on deliveries."""

from __future__ import annotations

import json
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from nixfleet.core.errors import ValidationError


class HookVerdict(StrEnum):
    """What became of a delivery; stored as the security event's detail and audited."""

    DISABLED = "disabled"  # no secret configured for this forge
    BAD_SIGNATURE = "bad_signature"
    NO_DELIVERY = "no_delivery"
    BAD_PAYLOAD = "bad_payload"
    REPLAY = "replay"
    OTHER_BRANCH = "other_branch"
    OTHER_EVENT = "other_event"
    ACCEPTED = "accepted"


class Push(BaseModel):
    """The fields of a push event NixFleet uses; GitHub, GitLab and Forgejo share them."""

    model_config = ConfigDict(extra="ignore")
    ref: str = Field(max_length=255)
    after: str = Field(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def parse_push(body: bytes) -> Push:
    """Return the push in body, or raise ValidationError saying what is wrong."""
    try:
        return Push.model_validate(json.loads(body))
    except (ValueError, PydanticValidationError) as exc:
        if isinstance(exc, PydanticValidationError):
            where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "body"
            raise ValidationError(
                f"hooks: the push event's {where} is missing or malformed"
            ) from None
        raise ValidationError("hooks: the delivery is not a JSON push event") from None


def branch_of(ref: str) -> str | None:
    """Return the branch a ref names (refs/heads/…), or None for a tag or other ref."""
    return ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
