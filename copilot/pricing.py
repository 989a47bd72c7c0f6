"""What a question cost, from the usage the API reported (the daily budget's unit).

Prices are USD per million tokens, per request (a question is several requests: one per
tool round).  Haiku 5.5 is tiered on the prompt's size, so the tier is chosen per
request from that request's own prompt tokens (input + cache reads + cache writes).
A model without a price here has ``cost_usd = None``: the budget must then count
tokens, never treat it as free.

Sources: the models' overview pages (Sonnet 5.5: $2 in / $10 out, 5-minute cache write
$2.50, cache read $0.10; Haiku 5.5 up to 100k prompt tokens: $0.10 / $0.50, cache write
$0.125; above: $0.50 / $2.50, cache write $0.625).  Haiku 5.5's cache-read price is
taken as 0.1x its input price, the general rule of the price list.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

_MTOK: Final = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Price:
    input: Decimal
    output: Decimal
    cache_write: Decimal
    cache_read: Decimal


@dataclass(frozen=True, slots=True)
class ModelPrice:
    base: Price
    # (prompt tokens above which, price) for models priced by prompt size
    above: tuple[int, Price] | None = None

    def for_prompt(self, prompt_tokens: int) -> Price:
        if self.above is not None and prompt_tokens > self.above[0]:
            return self.above[1]
        return self.base


def _p(i: str, o: str, w: str, r: str) -> Price:
    return Price(Decimal(i), Decimal(o), Decimal(w), Decimal(r))


PRICES: Final[dict[str, ModelPrice]] = {
    "claude-sonnet-5-5": ModelPrice(_p("2", "10", "2.50", "0.10")),
    "claude-haiku-5-5": ModelPrice(_p("0.10", "0.50", "0.125", "0.01"),
                                   above=(100_000, _p("0.50", "2.50", "0.625", "0.05"))),
}


def request_cost(price: ModelPrice | None, input_tokens: int, output_tokens: int,
                 cache_read: int, cache_write: int) -> Decimal | None:
    """One request's cost in USD, exact (not rounded); None without a price."""
    if price is None:
        return None
    p = price.for_prompt(input_tokens + cache_read + cache_write)
    total = (p.input * input_tokens + p.output * output_tokens + p.cache_read * cache_read
             + p.cache_write * cache_write)
    return total / _MTOK
