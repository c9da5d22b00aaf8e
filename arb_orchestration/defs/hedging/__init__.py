"""Dagster definitions of the hedging domain."""

from dagster import Definitions

defs = Definitions()
