"""The per-rule limits of the rules contract: conditions per rule and serialised size,
refused in API bodies (``RuleIn``) with a message naming the limit; messages from the
topic keep parsing (a rule stored before the limits must still be readable, to be
disabled), and ``limit_problem`` tells the feed what is wrong with them."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.rules import MAX_CONDITIONS, MAX_RULE_BYTES, RuleIn, RuleV1, limit_problem

COND = {"metric": "spend", "operator": ">=", "value": "80"}


def spread(n: int) -> dict[str, Any]:
    """``n`` conditions as an OR of AND groups of at most 20 (the per-group maximum)."""
    groups = [{"op": "and", "conditions": [COND] * min(20, n - i)} for i in range(0, n, 20)]
    return {"op": "or", "conditions": groups}


def body(conditions: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "burn", "conditions": conditions, **extra}


def test_up_to_the_condition_limit_is_accepted() -> None:
    assert MAX_CONDITIONS == 50
    RuleIn.model_validate(body(spread(50)))


@pytest.mark.parametrize("n", [51, 60])
def test_over_the_condition_limit_is_refused_naming_it(n: int) -> None:
    with pytest.raises(ValidationError) as err:
        RuleIn.model_validate(body(spread(n)))
    assert f"at most 50 conditions; this one has {n}" in str(err.value)


def test_the_reported_8000_condition_rule_is_refused() -> None:
    """Depth 3 x 20 per group: what the finding's owner saved three times."""
    leaf = {"op": "or", "conditions": [COND] * 20}
    mid = {"op": "or", "conditions": [leaf] * 20}
    top = {"op": "or", "conditions": [mid] * 20}
    with pytest.raises(ValidationError, match="this one has 8000"):
        RuleIn.model_validate(body(top))


def test_serialised_size_limit() -> None:
    assert MAX_RULE_BYTES == 16 * 1024
    ids = [f"{i:03d}" + "c" * 97 for i in range(170)]  # 100-character campaign ids
    small = body(spread(2), scope={"campaign_ids": ids[:120]})
    big = body(spread(2), scope={"campaign_ids": ids})
    assert len(json.dumps(small)) < 13_000 and len(json.dumps(big)) > 17_000  # the oracle: the JSON's own size
    RuleIn.model_validate(small)
    with pytest.raises(ValidationError, match="at most 16 KiB"):
        RuleIn.model_validate(big)


def test_topic_messages_parse_and_the_feed_learns_the_problem() -> None:
    stored = {"id": str(uuid.uuid4()), "workspace_id": str(uuid.uuid4()), "updated_at": datetime.now(UTC).isoformat(),
              **body(spread(60))}
    rule = RuleV1.model_validate(stored)
    assert limit_problem(rule) == "a rule may hold at most 50 conditions; this one has 60"
    assert limit_problem(RuleV1.model_validate({**stored, **body(spread(3))})) is None
    assert RuleV1.model_validate({**stored, "status": "disabled"}).status == "disabled"
