"""Shared fixtures. Real services (Kafka broker, PostgreSQL, simulators, SMTP) live in fixtures/."""

pytest_plugins = [
    "arb_orchestration_tests.fixtures.world",
    "arb_orchestration_tests.fixtures.kafka",
    "arb_orchestration_tests.fixtures.postgres",
]
