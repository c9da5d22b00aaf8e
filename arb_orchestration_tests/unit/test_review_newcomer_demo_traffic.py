"""The demo traffic of `make dev` must not bury the platform in rebalance runs.

Found by following the README on a clean clone: every capital event the generator made was a
`warning` and capital events were 10 % of the traffic, so at dev's 2 events/s the sensors asked
for ~14 rebalances a minute (12 from capital warnings, 2 from market warnings). The rebalance
saga runs one at a time (tag limit 1), so the queue grew without end: 20 queued runs after 2
minutes, 90 after 11, and a rebalance launched from the CLI as the README shows waited behind them.
"""

from __future__ import annotations

from collections import Counter

from arb_orchestration.commands.dev import DEMO_EVENTS_PER_SECOND
from arb_orchestration.domain.events import encode_event, parse_event
from arb_orchestration.domain.triggers import Action, route_event
from arb_orchestration.sim.event_generator import EventFactory

MINUTES = 60
# One rebalance saga at a time; a run takes ~5-20 s on the 2-core dev machine (launch included).
MAX_REBALANCES_PER_MINUTE = 3.5


def actions_per_minute(factory: EventFactory) -> Counter:
    n = int(DEMO_EVENTS_PER_SECOND * 60 * MINUTES)
    actions = Counter()
    for i in range(n):
        topic, payload = factory.next_event(now=1_800_000_000.0 + i / DEMO_EVENTS_PER_SECOND)
        actions[route_event(parse_event(topic, encode_event(payload))).action] += 1
    return Counter({action: count / MINUTES for action, count in actions.items()})


def test_dev_demo_traffic_asks_for_few_enough_rebalances_to_keep_the_queue_short():
    rates = actions_per_minute(EventFactory(seed=42))  # what dev's generator uses (seed 42 by default)
    assert rates[Action.STOP_LOSS] == 0
    assert 0 < rates[Action.REBALANCE] <= MAX_REBALANCES_PER_MINUTE, rates
    assert rates[Action.HEDGE] > 10 * rates[Action.REBALANCE]  # the demo is still alive: funding traffic


def test_capital_warnings_still_come_now_and_then():
    factory = EventFactory(seed=7)
    topics = Counter(factory.next_event(now=1_800_000_000.0 + i)[0] for i in range(2400))  # 20 min at 2/s
    assert 0 < topics["capital-events"] < 0.02 * 2400
