"""Kafka-triggered sensors (placeholder until the sensor work lands)."""

from dagster import Definitions

defs = Definitions()
