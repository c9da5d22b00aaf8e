"""`arb-orchestration topics create` run twice: the second run must not claim to be 'creating' topics
that all exist; exit codes are documented. The broker is a fake that already holds every topic
(the real create path is covered in integration/test_kafka_commands.py)."""

from __future__ import annotations

import pytest

from arb_orchestration.commands import topics


class AnsweringAdmin:
    """The reachability probe's client: the cluster answers."""

    def list_topics(self, timeout=None):
        return {}

    def poll(self, timeout=None):
        return 0


class ExistingTopicsKafka:
    bootstrap_servers = "fake:9092"

    def client_config(self):
        return {"bootstrap.servers": self.bootstrap_servers}

    def admin(self, **overrides):
        return AnsweringAdmin()

    def create_topics(self, names, partitions=1, replication=1):
        return {name: "exists" for name in names}


def test_a_second_run_reports_existing_topics_without_claiming_to_create_them(monkeypatch, capsys):
    monkeypatch.delenv("ARB_EVENT_TOPIC_PREFIX", raising=False)
    monkeypatch.setattr(topics.KafkaResource, "from_env", classmethod(lambda cls, **kw: ExistingTopicsKafka()))
    assert topics.main(["create"]) == 0
    out = capsys.readouterr().out
    assert "creating" not in out
    assert "fake:9092: ensuring 6 topics exist (new ones get 3 partition(s), replication 1)" in out
    assert out.count("  exists   ") == 6
    assert out.rstrip().endswith("0 created, 6 already existed")


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        topics.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit codes: 0 every topic exists now; 1 the broker failed" in text
    assert "partition count is not changed" in text
