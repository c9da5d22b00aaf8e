"""The sensor cursor remembers which topic its offsets belong to (the Kafka topic id).

Covered: a cursor written before topic ids existed still loads (and adopts the
first id it is shown); ids survive the JSON round trip; a different id is
reported as a recreated topic, and restarting that topic forgets its offsets
only (not another topic's, not the replay memory, not the hedge baselines);
malformed ids are refused like any malformed cursor.
"""

import json

import pytest

from arb_orchestration.domain.triggers import CursorError, SensorCursor, TopicIdVerdict

OLD = "83kyt6U9TfawXbyktBuKcg"
NEW = "YDGaqA1/S6GcSE054W6cng"

# A cursor as the sensors wrote it before topic ids (v1, no "topic_ids").
LEGACY = json.dumps({
    "v": 1,
    "offsets": {"market-events/0": 42, "market-events/1": 7, "market-events-x/0": 3},
    "seen": {"e1": 1795763773.9},
    "floor": 0.0,
    "hedged": {"binance|BTC/USDT:USDT": {"rate": 0.0004, "interval_hours": 8, "at": 1795763000.0, "event_id": "h1"}},
})


def test_a_cursor_without_topic_ids_loads_and_adopts_the_first_id():
    cursor = SensorCursor.parse(LEGACY)
    assert cursor.topic_ids == {}
    assert cursor.offsets["market-events/0"] == 42
    assert cursor.check_topic_id("market-events", OLD) is TopicIdVerdict.ADOPTED
    assert cursor.topic_ids == {"market-events": OLD}
    assert cursor.offsets["market-events/0"] == 42  # adopting moves no offset
    # Written without the key while it is empty (the same bytes as before for a cursor that never saw an id).
    assert "topic_ids" not in json.loads(SensorCursor.parse(LEGACY).serialize())


def test_topic_ids_survive_the_round_trip():
    cursor = SensorCursor.parse(LEGACY)
    cursor.check_topic_id("market-events", OLD)
    text = cursor.serialize()
    assert json.loads(text)["topic_ids"] == {"market-events": OLD}
    again = SensorCursor.parse(text)
    assert again.topic_ids == {"market-events": OLD}
    assert again.serialize() == text
    assert again.check_topic_id("market-events", OLD) is TopicIdVerdict.SAME


def test_a_different_id_is_a_recreated_topic_and_restarting_it_forgets_only_its_offsets():
    cursor = SensorCursor.parse(LEGACY)
    cursor.check_topic_id("market-events", OLD)
    assert cursor.check_topic_id("market-events", NEW) is TopicIdVerdict.RECREATED
    assert cursor.topic_ids["market-events"] == OLD  # the verdict alone changes nothing
    dropped = cursor.restart_topic("market-events", NEW)
    assert dropped == ["market-events/0", "market-events/1"]
    assert cursor.offsets == {"market-events-x/0": 3}  # a topic whose name starts the same is another topic
    assert cursor.topic_ids == {"market-events": NEW}
    assert "e1" in cursor.seen and cursor.baselines.points  # replay memory and baselines are not the topic's
    reloaded = SensorCursor.parse(cursor.serialize())
    assert reloaded.offsets == {"market-events-x/0": 3} and reloaded.topic_ids == {"market-events": NEW}


@pytest.mark.parametrize("topic_ids", [["x"], {"market-events": ""}, {"market-events": 5}])
def test_malformed_topic_ids_are_refused(topic_ids):
    with pytest.raises(CursorError, match="malformed"):
        SensorCursor.parse(json.dumps({"v": 1, "offsets": {}, "topic_ids": topic_ids}))
