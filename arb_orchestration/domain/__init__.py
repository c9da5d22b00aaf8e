"""Pure domain logic: no Dagster, no I/O. Everything here is tested on its own."""
