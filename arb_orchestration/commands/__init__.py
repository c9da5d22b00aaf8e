"""CLI commands; see `arb_orchestration.cli`."""
