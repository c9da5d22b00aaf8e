"""The SMTP sink's hold (a test hook beside `fail_next`): a held sender waits at DATA until released,
then gets a 451 and its message is not kept; the next message goes through as usual."""

import smtplib
import threading
import time

import pytest

from arb_orchestration.sim.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration


def _send(port: int, subject: str, outcome: list) -> None:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("a@localhost", ["b@localhost"], f"Subject: {subject}\r\n\r\nbody\r\n")
        outcome.append("sent")
    except smtplib.SMTPException as exc:
        outcome.append(exc)


def test_a_held_sender_waits_until_released_and_its_message_is_dropped():
    with SmtpSink() as sink:
        sink.hold_next()
        outcome: list = []
        sender = threading.Thread(target=_send, args=(sink.port, "held", outcome))
        sender.start()
        deadline = time.monotonic() + 10
        while sink.held < 1:
            assert time.monotonic() < deadline, "the sender never reached DATA"
            time.sleep(0.01)
        time.sleep(0.2)  # still waiting: nothing answered, nothing kept
        assert outcome == [] and sink.messages() == []
        sink.release_held()
        sender.join(10)
        [error] = outcome
        assert isinstance(error, smtplib.SMTPDataError) and error.smtp_code == 451
        assert sink.messages() == []
        after: list = []
        _send(sink.port, "after", after)
        assert after == ["sent"] and [m.subject for m in sink.messages()] == ["after"]
