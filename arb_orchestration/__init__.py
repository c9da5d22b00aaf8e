"""arb-orchestration: Dagster platform for the money-moving chores of a crypto-arbitrage desk."""

__version__ = "0.1.0"
