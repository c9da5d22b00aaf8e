"""SMTP client for the risk team's mail.

`SmtpResource.send` builds one message (text, optional HTML alternative) and
hands it to the server with a timeout, STARTTLS and AUTH when configured,
through `ResilientCaller` and the process-wide `smtp` breaker:

* connection failures, timeouts and 4xx replies are transient: retried with
  backoff and jitter;
* 5xx replies, refused authentication and a server without STARTTLS are
  business errors: not retried.

Delivery is at-least-once: a connection lost after the server took the
message can produce a duplicate on retry. Every attempt of one `send` carries
the same Message-ID, so a duplicate is recognisable. The password reaches the
resource as `EnvVar("SMTP_PASSWORD")`, is excluded from `repr`, and is never
logged (smtplib's debug output, which would print it, stays off).
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from dagster import ConfigurableResource
from pydantic import Field

from arb_orchestration.resources.errors import BusinessError, TransientError
from arb_orchestration.resources.rebind import CheapRebind
from arb_orchestration.resources.resilience import ResilientCaller, RetrySettings, breaker_for

log = logging.getLogger("arb_orchestration.resources.smtp")


def _is_transient(code: int) -> bool:
    return 400 <= code < 500


class SmtpResource(CheapRebind, ConfigurableResource):
    """Sends mail to the risk team."""

    host: str
    port: int
    username: str | None = None
    password: str | None = Field(default=None, repr=False, description="Pass EnvVar('SMTP_PASSWORD').")
    starttls: bool = False
    sender: str
    risk_team: list[str]
    timeout_seconds: float = 10.0
    tls_ca_file: str | None = None  # extra CA bundle for STARTTLS (a private relay's own CA)
    max_attempts: int = 4
    retry_base_delay: float = 0.5
    retry_max_delay: float = 5.0
    breaker_failure_threshold: int = 5
    breaker_reset_seconds: float = 30.0

    def health(self) -> dict:
        return self._breaker().snapshot()

    def _breaker(self):
        return breaker_for("smtp", self.breaker_failure_threshold, self.breaker_reset_seconds)

    def build_message(
        self,
        subject: str,
        body: str,
        *,
        to: list[str] | None = None,
        html: str | None = None,
        message_id: str | None = None,
    ) -> EmailMessage:
        recipients = list(to) if to else list(self.risk_team)
        if not recipients:
            raise BusinessError("no recipients: pass `to` or configure RISK_TEAM_EMAILS")
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False, usegmt=True)
        domain = self.sender.rpartition("@")[2] or "localhost"
        message["Message-ID"] = message_id or make_msgid(domain=domain)
        message.set_content(body)
        if html is not None:
            message.add_alternative(html, subtype="html")
        return message

    def send(
        self,
        subject: str,
        body: str,
        *,
        to: list[str] | None = None,
        html: str | None = None,
        message_id: str | None = None,
    ) -> str:
        """Send to `to` (default: the risk team); returns the Message-ID."""
        message = self.build_message(subject, body, to=to, html=html, message_id=message_id)
        recipients = list(to) if to else list(self.risk_team)
        caller = ResilientCaller(
            self._breaker(),
            RetrySettings(max_attempts=self.max_attempts, base_delay=self.retry_base_delay, max_delay=self.retry_max_delay),
        )
        failure: list[BusinessError] = []

        def attempt() -> bool:
            try:
                self._deliver_once(message, recipients)
            except BusinessError as exc:
                # The server answered: it is up; don't count this against the breaker.
                failure.append(exc)
                return False
            return True

        if not caller.call(attempt, what=f"smtp send {subject!r}"):
            raise failure[-1]
        log.info("smtp: sent %r to %s (%s)", subject, ", ".join(recipients), message["Message-ID"])
        return str(message["Message-ID"])

    def _deliver_once(self, message: EmailMessage, recipients: list[str]) -> None:
        where = f"{self.host}:{self.port}"
        client: smtplib.SMTP | None = None
        try:
            # Connect in the constructor: only then does smtplib remember the host
            # that STARTTLS checks the certificate against.
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout_seconds)
            client.ehlo()
            if self.starttls:
                context = ssl.create_default_context(cafile=self.tls_ca_file)
                client.starttls(context=context)
                client.ehlo()
            if self.username:
                if not self.password:
                    raise BusinessError("SMTP_USERNAME is set but SMTP_PASSWORD is not", code="smtp.config")
                client.login(self.username, self.password)
            refused = client.send_message(message, from_addr=self.sender, to_addrs=recipients)
        except BusinessError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise BusinessError(f"smtp {where}: authentication refused ({exc.smtp_code})", code=str(exc.smtp_code)) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise BusinessError(f"smtp {where}: server does not support a required extension: {exc}", code="smtp.unsupported") from exc
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            message_text = f"smtp {where}: all recipients refused {sorted(exc.recipients)} ({codes})"
            if codes and all(_is_transient(c) for c in codes):
                raise TransientError(message_text) from exc
            raise BusinessError(message_text, code=str(max(codes) if codes else "")) from exc
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
            message_text = f"smtp {where}: {exc.smtp_code} {text}"
            if _is_transient(exc.smtp_code):
                raise TransientError(message_text) from exc
            raise BusinessError(message_text, code=str(exc.smtp_code)) from exc
        except ssl.SSLCertVerificationError as exc:
            raise BusinessError(f"smtp {where}: TLS certificate not trusted: {exc.verify_message}", code="smtp.tls") from exc
        except (smtplib.SMTPException, socket.timeout, ConnectionError, OSError) as exc:
            raise TransientError(f"smtp {where}: {type(exc).__name__}: {exc}") from exc
        finally:
            if client is not None:
                try:
                    client.quit()
                except Exception:  # the message is already handed over (or not); closing is best effort
                    client.close()
        if refused:
            raise BusinessError(f"smtp {where}: some recipients refused: {sorted(refused)}", code="smtp.partial")
