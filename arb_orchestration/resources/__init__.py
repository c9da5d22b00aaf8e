"""One ConfigurableResource per external system (venues, Wise, Kafka, SMTP)."""
