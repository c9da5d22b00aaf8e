"""Dagster definitions of the stop_loss domain."""

from dagster import Definitions

defs = Definitions()
