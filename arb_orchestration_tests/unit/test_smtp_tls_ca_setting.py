"""SMTP_TLS_CA_FILE reaches the smtp resource (a prod relay signed by a private CA can be configured)."""

from __future__ import annotations

from arb_orchestration.defs.resources import resources_for_deployment


def test_the_smtp_ca_bundle_comes_from_the_environment(monkeypatch, tmp_path):
    bundle = tmp_path / "relay-ca.pem"
    monkeypatch.setenv("SMTP_TLS_CA_FILE", str(bundle))
    assert resources_for_deployment("local")["smtp"].tls_ca_file == str(bundle)


def test_without_it_the_system_cas_are_used(monkeypatch):
    monkeypatch.delenv("SMTP_TLS_CA_FILE", raising=False)
    assert resources_for_deployment("local")["smtp"].tls_ca_file is None
