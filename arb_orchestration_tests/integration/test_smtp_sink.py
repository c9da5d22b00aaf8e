"""`SmtpResource` against the real aiosmtpd sink on loopback: mail read back (and as .eml, and on
the mailbox page), transient refusals retried, permanent ones not, AUTH, STARTTLS with a private
CA, timeouts, a dead server opening the breaker, and the password in no log or output."""

import datetime
import ipaddress
import logging
import socket
from email import policy
from email.parser import BytesParser

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from arb_orchestration.resources.errors import BusinessError, CircuitOpenError, TransientError
from arb_orchestration.resources.resilience import reset_breakers
from arb_orchestration.resources.smtp import SmtpResource
from arb_orchestration.sim.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration

PASSWORD = "smtp-secret-4f9a1c"


@pytest.fixture(autouse=True)
def fresh_breakers():
    reset_breakers()
    yield
    reset_breakers()


@pytest.fixture
def sink(tmp_path):
    server = SmtpSink(maildir=tmp_path / "mail")
    server.start()
    yield server
    server.stop()


def resource(host, port, **overrides) -> SmtpResource:
    config = dict(
        host=host,
        port=port,
        sender="arb-orchestration@desk.example",
        risk_team=["risk@desk.example"],
        timeout_seconds=3.0,
        retry_base_delay=0.01,
        retry_max_delay=0.05,
    )
    config.update(overrides)
    return SmtpResource(**config)


def test_mail_reaches_the_sink_and_reads_back(sink, tmp_path):
    smtp = resource(sink.host, sink.port)
    message_id = smtp.send("STOP-LOSS: binance BTC", "Closed 2.5 BTC short at 64,000.", html="<h1>Stop-loss</h1>")
    [mail] = sink.wait_for(1)
    assert mail.subject == "STOP-LOSS: binance BTC"
    assert mail.sender == "arb-orchestration@desk.example"
    assert mail.to == ["risk@desk.example"]
    assert mail.body.strip() == "Closed 2.5 BTC short at 64,000."
    assert mail.html.strip() == "<h1>Stop-loss</h1>"
    assert mail.message_id == message_id

    [eml] = sorted((tmp_path / "mail").glob("*.eml"))
    assert mail.path == eml
    parsed = BytesParser(policy=policy.default).parsebytes(eml.read_bytes())
    assert parsed["Subject"] == "STOP-LOSS: binance BTC" and parsed["X-RcptTo"] == "risk@desk.example"


def test_explicit_recipients_override_the_risk_team(sink):
    resource(sink.host, sink.port).send("hedge drift", "42 bps", to=["ops@desk.example", "cto@desk.example"])
    assert sink.wait_for(1)[0].to == ["ops@desk.example", "cto@desk.example"]


def test_mailbox_page_lists_the_mail(sink):
    url = sink.start_http()
    resource(sink.host, sink.port).send("Rebalance <done>", "moved 10k EUR")
    sink.wait_for(1)
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "Rebalance &lt;done&gt;" in page.text
    assert httpx.get(url + "/messages.json").json()[0]["subject"] == "Rebalance <done>"
    assert b"moved 10k EUR" in httpx.get(url + "/messages/0").content
    assert httpx.get(url + "/messages/9").status_code == 404


def test_transient_refusals_are_retried_and_the_mail_arrives_once(sink):
    sink.fail_next(2, code=451)
    resource(sink.host, sink.port).send("retry me", "body")
    assert [m.subject for m in sink.wait_for(1)] == ["retry me"]
    assert sink.pending_failures == 0


def test_permanent_refusal_is_a_business_error_and_not_retried(sink):
    sink.fail_next(2, code=550, text="5.7.1 Rejected by policy")
    with pytest.raises(BusinessError) as err:
        resource(sink.host, sink.port).send("nope", "body")
    assert err.value.code == "550"
    assert sink.pending_failures == 1  # exactly one attempt was made
    assert sink.messages() == []


def test_auth_with_the_right_password_and_never_logged(tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)  # includes aiosmtpd's own protocol log
    server = SmtpSink(username="alerts", password=PASSWORD)
    host, port = server.start()
    try:
        resource(host, port, username="alerts", password=PASSWORD).send("authenticated", "body")
        assert server.wait_for(1)[0].subject == "authenticated"
        with pytest.raises(BusinessError) as err:
            resource(host, port, username="alerts", password="wrong-" + PASSWORD).send("denied", "body")
        assert err.value.code == "535"
        with pytest.raises(BusinessError):
            resource(host, port).send("anonymous", "body")  # the sink requires AUTH: 530
    finally:
        server.stop()
    assert server.auth_attempts == [("alerts", True), ("alerts", False)]  # the wrong one was not retried
    out, errors = capfd.readouterr()
    assert PASSWORD not in caplog.text and PASSWORD not in out and PASSWORD not in errors
    assert PASSWORD not in str(err.value)


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "sink.crt", tmp_path / "sink.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_starttls_with_a_private_ca_then_auth(tmp_path):
    cert, key = _self_signed(tmp_path)
    server = SmtpSink(username="alerts", password=PASSWORD, tls_cert=cert, tls_key=key)
    host, port = server.start()
    try:
        resource(host, port, starttls=True, tls_ca_file=str(cert), username="alerts", password=PASSWORD).send("over tls", "body")
        assert server.wait_for(1)[0].subject == "over tls"
        with pytest.raises(BusinessError) as untrusted:
            resource(host, port, starttls=True, username="alerts", password=PASSWORD).send("untrusted", "body")
        assert untrusted.value.code == "smtp.tls"
        with pytest.raises(BusinessError):
            resource(host, port, username="alerts", password=PASSWORD).send("plain", "body")  # 530 STARTTLS first
    finally:
        server.stop()
    assert [m.subject for m in server.messages()] == ["over tls"]


def test_silent_server_times_out_as_a_transient_error():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # accepts connections, never says hello
        with pytest.raises(TransientError, match="timeout|timed out"):
            resource("127.0.0.1", listener.getsockname()[1], timeout_seconds=0.3, max_attempts=2).send("s", "b")


def test_dead_server_is_retried_then_opens_the_breaker():
    server = SmtpSink()
    host, port = server.start()
    server.stop()
    smtp = resource(host, port, max_attempts=2, breaker_failure_threshold=3, breaker_reset_seconds=60)
    with pytest.raises(TransientError):
        smtp.send("s", "b")
    with pytest.raises(TransientError):
        smtp.send("s", "b")
    assert smtp.health()["state"] == "open"
    with pytest.raises(CircuitOpenError):
        smtp.send("s", "b")
