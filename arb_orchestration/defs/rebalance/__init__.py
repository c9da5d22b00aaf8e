"""Dagster definitions of the rebalance domain."""

from dagster import Definitions

defs = Definitions()
