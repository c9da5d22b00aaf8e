"""`SmtpResource` message building and the sink's message parsing, without a server."""

import pytest

from arb_orchestration.resources.errors import BusinessError
from arb_orchestration.resources.smtp import SmtpResource
from arb_orchestration.sim.smtp_sink import parse_message

PASSWORD = "unit-smtp-password-77"


def resource(**overrides) -> SmtpResource:
    config = dict(host="127.0.0.1", port=25, sender="arb@desk.example", risk_team=["risk@desk.example", "cro@desk.example"])
    config.update(overrides)
    return SmtpResource(**config)


def test_message_goes_to_the_risk_team_by_default():
    message = resource().build_message("Stop-loss fired", "Closed 3 positions.")
    assert message["To"] == "risk@desk.example, cro@desk.example"
    assert message["From"] == "arb@desk.example"
    assert message["Message-ID"].endswith("@desk.example>")
    assert message.get_body(("plain",)).get_content().strip() == "Closed 3 positions."
    assert message.get_body(("html",)) is None


def test_explicit_recipients_html_and_message_id():
    message = resource().build_message("s", "text", to=["ops@desk.example"], html="<p>text</p>", message_id="<fixed@desk>")
    assert message["To"] == "ops@desk.example"
    assert message["Message-ID"] == "<fixed@desk>"
    assert message.get_body(("html",)).get_content().strip() == "<p>text</p>"


def test_no_recipients_at_all_is_a_business_error():
    with pytest.raises(BusinessError):
        resource(risk_team=[]).build_message("s", "b")


def test_password_is_not_in_repr():
    configured = resource(username="alerts", password=PASSWORD)
    assert PASSWORD not in repr(configured) and PASSWORD not in str(configured)


def test_sink_parses_what_the_resource_builds():
    message = resource().build_message("Hedge drift", "drift 42 bps", html="<b>drift</b>")
    parsed = parse_message(message.as_bytes(), "arb@desk.example", ["risk@desk.example", "bcc@desk.example"], 0.0)
    assert parsed.subject == "Hedge drift"
    assert parsed.sender == "arb@desk.example"
    assert parsed.to == ["risk@desk.example", "bcc@desk.example"]
    assert parsed.body.strip() == "drift 42 bps"
    assert parsed.html.strip() == "<b>drift</b>"
    assert parsed.message_id == message["Message-ID"]
