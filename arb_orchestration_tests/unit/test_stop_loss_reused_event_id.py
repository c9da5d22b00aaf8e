"""A new signed critical event that reuses the id of an earlier stop-loss is acted on, loudly — not swallowed.

Replays are refused by the timestamp window and the seen-ids store (`RecentEventIds`, sized for that window).
Past it, a *new* signed critical event with a fresh timestamp that reuses an earlier stop-loss's id (a producer
reusing an incident id) was requested under the same run key; Dagster skips a request whose run key a run of the
sensor already has, so the tick said "-> emergency_stop_loss_saga" and nothing ran. A re-read of the *same*
message (same topic/partition/offset: a cursor not saved) must still map to the same key (one run per message).
"""

import json
import uuid

from arb_orchestration.domain.events import encode_event, sign_event
from arb_orchestration_tests.unit.test_review_sensors_poison import KEY, _shock
from arb_orchestration_tests.unit.test_review_sensors_run_keys import (  # noqa: F401 (fixture)
    _review_stop_loss_job,
    market_with_instance,
)


def _forget_seen_ids(cursor: str) -> str:
    """The cursor as it is once the seen ids have aged out of the replay window."""
    data = json.loads(cursor)
    for key in ("seen", "seen_ids", "recent_ids"):
        data.pop(key, None)
    return json.dumps(data)


def test_a_new_critical_event_reusing_a_stop_loss_id_gets_its_own_run(market_with_instance, caplog):
    evaluate, logs, existing, started = market_with_instance
    incident = f"incident-{uuid.uuid4().hex[:8]}"
    logs[0].append(encode_event(sign_event(_shock("critical", event_id=incident), KEY)))
    first = evaluate()
    [stop] = first.run_requests
    assert stop.run_key == incident
    started(stop)

    # Later, beyond the replay window: a new signed critical event with the same id.
    logs[0].append(encode_event(sign_event(_shock("critical", event_id=incident), KEY)))
    cursor = _forget_seen_ids(first.cursor)
    second = evaluate(cursor)
    [again] = second.run_requests
    assert again.job_name == _review_stop_loss_job.name
    assert not existing(again.run_key), "Dagster would skip this stop-loss: its run key is taken"
    assert incident in again.run_key
    # Re-read of that same message (the cursor not saved): the same key, so still one run for it.
    assert [r.run_key for r in evaluate(cursor).run_requests] == [again.run_key]
    # Re-read of the first message: its own key, which its run holds (Dagster skips it: one run per message).
    assert [r.run_key for r in evaluate().run_requests][:1] == [incident]


def test_the_same_critical_event_produced_twice_keeps_one_run(market_with_instance):
    evaluate, logs, existing, started = market_with_instance
    signed = sign_event(_shock("critical", event_id=f"incident-{uuid.uuid4().hex[:8]}"), KEY)
    logs[0].append(encode_event(signed))
    first = evaluate()
    [stop] = first.run_requests
    started(stop)

    logs[0].append(encode_event(signed))  # a producer retry: the same event at the next offset
    [duplicate] = evaluate(_forget_seen_ids(first.cursor)).run_requests
    assert duplicate.run_key == stop.run_key and existing(duplicate.run_key), "Dagster must skip it: one run per event"
