"""Dagster definitions of the ops_control domain."""

from dagster import Definitions

defs = Definitions()
