"""CheapRebind: Dagster builds our plain-config resources without re-inferring their schema, same values."""

from __future__ import annotations

import threading

import pytest
from dagster import ConfigurableResource, EnvVar, build_resources, build_sensor_context, instance_for_test
from dagster._config.pythonic_config import resource as dagster_resource
from pydantic import PrivateAttr

from arb_orchestration.resources.kafka import KafkaResource
from arb_orchestration.resources.rebind import REBIND_METHOD, CheapRebind
from arb_orchestration.resources.smtp import SmtpResource


@pytest.fixture
def schema_inferences(monkeypatch):
    """Counts Dagster's config-schema inferences per resource class name."""
    counts: dict[str, int] = {}
    real = dagster_resource.infer_schema_from_config_class

    def counting(model_cls, *args, **kwargs):
        counts[model_cls.__name__] = counts.get(model_cls.__name__, 0) + 1
        return real(model_cls, *args, **kwargs)

    monkeypatch.setattr(dagster_resource, "infer_schema_from_config_class", counting)
    return counts


def test_the_overridden_dagster_method_still_exists():
    # A Dagster upgrade that renames it would leave CheapRebind as dead code: correct, but slow again.
    assert hasattr(dagster_resource.ConfigurableResourceFactory, REBIND_METHOD)
    assert REBIND_METHOD in vars(CheapRebind)


def test_a_sensor_tick_builds_kafka_without_inferring_its_schema(schema_inferences):
    kafka = KafkaResource(bootstrap_servers="127.0.0.1:9092", client_id="tick", fetch_wait_max_ms=25)
    schema_inferences.clear()
    with instance_for_test() as instance:
        context = build_sensor_context(cursor=None, resources={"kafka": kafka}, instance=instance)
        with context:
            built = context.resources.kafka
            # Dagster's own path re-creates the resource three times, inferring the schema each time.
            assert schema_inferences.get("KafkaResource", 0) == 0
            assert built is not kafka
            assert built.model_dump() == kafka.model_dump()
            assert built.consumer_config() == kafka.consumer_config()
            # The init context is attached to the built copy, as on Dagster's path ...
            assert built.get_resource_context().instance is instance
    # ... and never to the definition's own object, which every tick starts from.
    assert kafka._state__internal__.resource_context is None


def test_smtp_is_built_the_cheap_way_too(schema_inferences):
    smtp = SmtpResource(host="127.0.0.1", port=2525, sender="bot@desk", risk_team=["risk@desk"])
    schema_inferences.clear()
    with build_resources({"smtp": smtp}) as resources:
        assert resources.smtp.model_dump() == smtp.model_dump()
        # Its own containers, as Dagster's validating path gives: a change in one build stays there.
        assert resources.smtp.risk_team is not smtp.risk_team
        resources.smtp.risk_team.append("someone@else")
    assert smtp.risk_team == ["risk@desk"]
    assert schema_inferences.get("SmtpResource", 0) == 0


def test_an_env_var_field_still_resolves_through_dagster(monkeypatch, schema_inferences):
    monkeypatch.setenv("REBIND_TEST_SIGNING_KEY", "k-123")
    kafka = KafkaResource(bootstrap_servers="127.0.0.1:9092", signing_key=EnvVar("REBIND_TEST_SIGNING_KEY"))
    with build_resources({"kafka": kafka}) as resources:
        # The resolved value differs from the field (an EnvVar naming it): Dagster's path decides.
        assert resources.kafka.signing_key == "k-123"
        assert type(resources.kafka.signing_key) is str
    assert schema_inferences.get("KafkaResource", 0) >= 1


class _WithPrivateState(CheapRebind, ConfigurableResource):
    name: str = "x"
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)


def test_a_resource_with_private_state_gets_fresh_state_not_a_shared_copy():
    template = _WithPrivateState(name="a")
    with build_resources({"r": template}) as resources:
        built = resources.r
        assert built.name == "a"
        # A copy would share the template's lock (and, in WiseResource, its HTTP client).
        assert built._lock is not template._lock


class _Plain(CheapRebind, ConfigurableResource):
    size: int = 1
    label: str = "a"


def test_different_values_take_dagsters_path():
    plain = _Plain(size=2)
    changed = plain._with_updated_values({"size": 3})
    assert changed.size == 3 and plain.size == 2
    # Same value, other type (Dagster would coerce it): not "the same values".
    coerced = _Plain(size=2)._with_updated_values({"label": "a", "size": 2})
    assert coerced.size == 2 and coerced.label == "a"
    unknown_field = plain._with_updated_values({})
    assert unknown_field.model_dump() == plain.model_dump()
