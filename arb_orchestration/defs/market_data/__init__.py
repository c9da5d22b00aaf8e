"""Dagster definitions of the market_data domain."""

from dagster import Definitions

defs = Definitions()
