"""How a hold resolves, from what the request actually delivered.

1. The upstream sent usage: bill it (the last usage chunk of a stream wins).
2. No usage, but text was delivered (a dropped stream, a client that left, a
   `no-usage` upstream): bill the prompt estimate plus
   ceil(output bytes / FALLBACK_BYTES_PER_TOKEN) completion tokens.
3. No usage and nothing delivered after a failure: void, cost 0.
4. The hold's lease lapsed (the gateway that ran it died): what its last
   checkpoint shows was delivered, by rule 2 (the prompt estimate plus the
   checkpointed bytes); a lease that lapsed with nothing delivered costs 0.

Whatever the rule, the cost is capped at the held amount: the limit was
checked when holding, so settling can never overdraw the balance.
"""

from __future__ import annotations

from typing import Protocol

from teegate.billing._money import exact_int
from teegate.billing._pricing import cost_nano
from teegate.billing._records import MAX_RECORDED_TOKENS, Hold, SettledBy, Settlement

FALLBACK_BYTES_PER_TOKEN = 2
"""Byte-level BPE tokens average 3-4 bytes in English and code and about 3 in
CJK text (3-byte characters), so 2 bytes per token over-counts ordinary text;
and since the count grows with every byte delivered, a long completion can
never be billed as a short one."""


class UsageLike(Protocol):
    @property
    def prompt_tokens(self) -> int: ...

    @property
    def completion_tokens(self) -> int: ...


def fallback_completion_tokens(output_bytes: int, held_completion_tokens: int) -> int:
    """ceil(bytes / 2), but never more than the hold covered."""
    exact_int(output_bytes, "output_bytes")
    return min(-(-output_bytes // FALLBACK_BYTES_PER_TOKEN), held_completion_tokens)


def settlement_for(
    hold: Hold,
    *,
    status: str,
    usage: UsageLike | None,
    output_bytes: int,
    now_ms: int,
) -> Settlement:
    """Apply rules 1-3 above to one finished request."""
    prompt, completion, settled_by = settled_tokens(hold, status, usage, output_bytes)
    cost = cost_nano(prompt, completion, hold.rates)
    return Settlement(
        hold=hold,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_nano=min(cost, hold.amount_nano),
        settled_by=settled_by,
        status=status,
        capped=cost > hold.amount_nano,
        settled_ms=now_ms,
    )


def settled_tokens(
    hold: Hold, status: str, usage: UsageLike | None, output_bytes: int
) -> tuple[int, int, SettledBy]:
    """The prompt and completion tokens rules 1-3 bill (a key's tokens-per-minute
    window is corrected to the same count)."""
    if usage is not None:
        prompt = min(exact_int(usage.prompt_tokens, "usage.prompt_tokens"), MAX_RECORDED_TOKENS)
        completion = min(
            exact_int(usage.completion_tokens, "usage.completion_tokens"), MAX_RECORDED_TOKENS
        )
        return prompt, completion, "usage"
    if output_bytes > 0 or status == "ok":
        completion = fallback_completion_tokens(output_bytes, hold.completion_tokens)
        return hold.prompt_tokens, completion, "fallback"
    return 0, 0, "void"


def expired_settlement(hold: Hold, now_ms: int) -> Settlement:
    """Rule 4: nobody settled this hold while its lease ran, so it is charged what its
    checkpoint proves was delivered (docs/billing.md, "Leases and the reaper")."""
    if hold.output_bytes > 0:
        prompt = hold.prompt_tokens
        completion = fallback_completion_tokens(hold.output_bytes, hold.completion_tokens)
    else:
        prompt = completion = 0
    cost = cost_nano(prompt, completion, hold.rates)
    return Settlement(
        hold=hold,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_nano=min(cost, hold.amount_nano),
        settled_by="expired-hold",
        status="expired",
        capped=False,
        settled_ms=now_ms,
    )


def void_settlement(hold: Hold, status: str, now_ms: int) -> Settlement:
    """Release a hold whose request never reached the upstream."""
    return settlement_for(hold, status=status, usage=None, output_bytes=0, now_ms=now_ms)
