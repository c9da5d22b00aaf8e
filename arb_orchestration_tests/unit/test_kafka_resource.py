"""KafkaResource's config builder: PLAINTEXT/SSL/SASL, errors that name the field, secrets never shown."""

from __future__ import annotations

import pytest

from arb_orchestration.resources.kafka import KafkaConfigError, KafkaResource, redact


def resource(**fields) -> KafkaResource:
    return KafkaResource(**{"bootstrap_servers": "127.0.0.1:9092", **fields})


def test_plaintext_config():
    config = resource(bootstrap_servers=" a:9092 , b:9093 ").client_config()
    assert config["bootstrap.servers"] == "a:9092,b:9093"
    assert config["security.protocol"] == "PLAINTEXT"
    assert config["client.id"] == "arb-orchestration"
    assert not any(key.startswith(("sasl.", "ssl.")) for key in config)


def test_sasl_ssl_with_scram_and_a_ca(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    config = resource(
        security_protocol="sasl_ssl",
        sasl_mechanism="scram-sha-512",
        sasl_username="desk",
        sasl_password="s3cret",
        ssl_ca_location=str(ca),
    ).client_config()
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "desk" and config["sasl.password"] == "s3cret"
    assert config["ssl.ca.location"] == str(ca)


def test_ssl_without_sasl_and_sasl_plaintext_with_plain():
    assert resource(security_protocol="SSL").client_config()["security.protocol"] == "SSL"
    config = resource(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u",
                      sasl_password="p").client_config()
    assert config["sasl.mechanism"] == "PLAIN"
    assert "ssl.ca.location" not in config


@pytest.mark.parametrize(
    "fields, field, hint",
    [
        ({"bootstrap_servers": ""}, "bootstrap_servers", "empty"),
        ({"bootstrap_servers": "localhost"}, "bootstrap_servers", "host:port"),
        ({"bootstrap_servers": "h:99999"}, "bootstrap_servers", "host:port"),
        ({"security_protocol": "TLS"}, "security_protocol", "SASL_SSL"),
        ({"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": "p"}, "sasl_mechanism", "required"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "sasl_username": "u", "sasl_password": "p"},
         "sasl_mechanism", "SCRAM-SHA-256"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_password": "p"}, "sasl_username", "required"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
         "sasl_password", "KAFKA_SASL_PASSWORD"),
        ({"sasl_mechanism": "PLAIN"}, "sasl_mechanism", "does not use SASL"),
        ({"security_protocol": "SSL", "sasl_password": "p"}, "sasl_password", "does not use SASL"),
        ({"ssl_ca_location": "/etc/ca.pem"}, "ssl_ca_location", "does not use TLS"),
        ({"security_protocol": "SSL", "ssl_ca_location": "/nonexistent/ca.pem"}, "ssl_ca_location", "no such file"),
    ],
)
def test_invalid_config_names_the_field(fields, field, hint):
    with pytest.raises(KafkaConfigError) as info:
        resource(**fields).client_config()
    message = str(info.value)
    assert message.startswith(f"KafkaResource.{field}:") and hint in message


def test_secrets_never_appear_in_errors_repr_or_describe():
    secret = "hunter2-very-secret"
    r = resource(security_protocol="SASL_SSL", sasl_mechanism="BOGUS", sasl_username="u", sasl_password=secret,
                 signing_key=secret)
    with pytest.raises(KafkaConfigError) as info:
        r.client_config()
    assert secret not in str(info.value)
    assert secret not in repr(r) and secret not in str(r)
    ok = resource(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u", sasl_password=secret)
    assert ok.describe()["sasl.password"] == "***"
    assert redact({"sasl.password": secret, "a": 1}) == {"sasl.password": "***", "a": 1}


def test_consumer_config_is_for_manual_assignment():
    config = resource().consumer_config()
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False
    assert config["fetch.wait.max.ms"] == 10
    assert config["group.id"]  # librdkafka insists; assign() never joins it
    overridden = resource().consumer_config(fetch_wait_max_ms=100, **{"auto.offset.reset": "latest"})
    assert overridden["fetch.wait.max.ms"] == 100 and overridden["auto.offset.reset"] == "latest"


def test_producer_config_is_idempotent_and_acks_all():
    config = resource().producer_config()
    assert config["acks"] == "all" and config["enable.idempotence"] is True


def test_clients_build_without_connecting():
    from confluent_kafka import Consumer, KafkaException, Producer
    from confluent_kafka.admin import AdminClient

    r = resource()  # nothing listens on 127.0.0.1:9092: building must not need a broker
    producer, consumer, admin = r.producer(), r.consumer(), r.admin()
    try:
        assert (type(producer), type(consumer), type(admin)) == (Producer, Consumer, AdminClient)
        assert consumer.assignment() == []  # manual assignment: nothing joined or assigned yet
    finally:
        consumer.close()
    # librdkafka checks the whole configuration when a client is built, so the builds above
    # vouch for the configs the resource hands out: an inconsistent one does not build.
    with pytest.raises(KafkaException, match="enable.idempotence"):
        r.producer(acks="0")


def test_from_env_reads_settings_and_secrets_at_call_time(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9094")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "desk")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "pw")
    monkeypatch.setenv("EVENT_SIGNING_KEY", "sig")
    r = KafkaResource.from_env()
    assert (r.bootstrap_servers, r.sasl_password, r.signing_key) == ("broker:9094", "pw", "sig")
    assert r.client_config()["sasl.mechanism"] == "SCRAM-SHA-256"
    assert KafkaResource.from_env(bootstrap_servers="other:1").bootstrap_servers == "other:1"


def test_wired_resource_takes_secrets_as_env_vars(monkeypatch):
    from dagster import EnvVar

    from arb_orchestration.defs.resources import resources_for_deployment

    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "pw")
    # A SASL password is only accepted (at load too) with a SASL protocol, mechanism and username.
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "arb")
    kafka = resources_for_deployment("local")["kafka"]
    assert isinstance(kafka, KafkaResource)
    # Unresolved EnvVar references, not values: nothing secret is read at load.
    assert isinstance(kafka.sasl_password, EnvVar) and kafka.sasl_password.env_var_name == "KAFKA_SASL_PASSWORD"
    assert isinstance(kafka.signing_key, EnvVar)
