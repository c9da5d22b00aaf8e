"""A cheaper way for Dagster to bind a plain-config resource to its init context.

Each time Dagster builds a `ConfigurableResource` for a sensor tick or a run
(`ConfigurableResourceFactory._initialize_and_run`), it re-creates the instance three
times through `_with_updated_values`: once to resolve nested resources, once to attach
the init context, once to apply `context.resource_config`. Every re-creation runs
pydantic validation and infers the class's Dagster config schema again
(`infer_schema_from_config_class`): ~2-3 ms each for `KafkaResource`, 7-9 ms per
sensor tick in all, measured, which is most of what a caught-up event-sensor tick costs.

For a resource whose fields are plain config (no nested resources, no pydantic private
attributes: a copy would share their objects, e.g. an HTTP client, where re-creation
makes fresh ones) and whose new values are exactly the values it already holds, the re-created instance is a copy of
this one: the same field values, the same schema. `CheapRebind` returns that copy
(`model_copy`, no validation, no schema inference) and leaves everything else to
Dagster's own path: any value that differs, or differs in type (an `EnvVar` field
whose resolved value arrives in `resource_config`), any nested resource or private
attribute, goes the usual way. Only which object Dagster gets back changes, never its values.
"""

from __future__ import annotations

from collections.abc import Mapping
from copy import deepcopy
from typing import Any


# The Dagster method this overrides; a Dagster upgrade that renames it turns the override into
# dead code (correct, only slower), which test_resource_rebind notices.
REBIND_METHOD = "_with_updated_values"


class CheapRebind:
    """Mixin (before `ConfigurableResource` in the bases) for resources whose fields are plain config."""

    def _with_updated_values(self, values: Mapping[str, Any] | None):
        if _same_values(self, values or {}):
            copy = self.model_copy()  # type: ignore[attr-defined]
            # Dagster's path validates into fresh containers; so does this (a list of mail recipients
            # mutated in one run must not change the definition every later build starts from).
            for name in type(copy).model_fields:
                value = copy.__dict__.get(name)
                if isinstance(value, (list, dict, set)):
                    copy.__dict__[name] = deepcopy(value)
            # What Dagster's own path does to the instance it creates: keep this one's init context.
            state = self._state__internal__  # type: ignore[attr-defined]
            copy._state__internal__ = copy._state__internal__._replace(resource_context=state.resource_context)
            return copy
        return super()._with_updated_values(values)  # type: ignore[misc]


def _same_values(resource: Any, values: Mapping[str, Any]) -> bool:
    """True when `values` would change nothing in `resource` (same type and value per field), a resource with no
    nested resources and no private attributes."""
    state = resource._state__internal__
    if state.nested_resources or state.nested_partial_resources or type(resource).__private_attributes__:
        return False
    fields = type(resource).model_fields
    for name, value in values.items():
        if name not in fields:
            return False
        current = getattr(resource, name)
        if type(current) is not type(value) or current != value:
            return False
    return True

