"""The portal's outgoing mail: SMTP when configured, else a folder.

In development (no ``MARKET_SMTP_URL``) every mail is written to
``MARKET_HOME/mail/<time>-<to>.eml`` and logged, so the confirmation link
is at hand without a mail server; tests read the folder.
"""
from __future__ import annotations

import re
import smtplib
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote, urlsplit

import structlog

from contracts.envelope import utc_now_iso

log = structlog.get_logger("portal.mail")
#: seconds to wait for the SMTP server
SMTP_TIMEOUT = 20


class Mailer:
    def __init__(self, settings):
        self.sender = settings.mail_from
        self.smtp_url = settings.smtp_url
        self.folder = Path(settings.mail_dir)

    def send(self, to: str, subject: str, body: str) -> None:
        """Deliver one plain-text mail (blocking: run it in a thread)."""
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, to, subject
        message.set_content(body)
        if self.smtp_url:
            self._smtp(message)
            log.info("mail sent", to=to, subject=subject)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        safe_to = re.sub(r"[^A-Za-z0-9@._-]", "_", to)
        path = self.folder / f"{utc_now_iso().replace(':', '')}-{safe_to}.eml"
        path.write_bytes(bytes(message))
        log.info("mail written to the outbox folder (no MARKET_SMTP_URL)", to=to, subject=subject, path=str(path),
                 links=re.findall(r"https?://\S+", body))

    def _smtp(self, message: EmailMessage) -> None:
        url = urlsplit(self.smtp_url)
        secure = url.scheme == "smtps"
        client = (smtplib.SMTP_SSL if secure else smtplib.SMTP)(url.hostname or "localhost",
                                                               url.port or (465 if secure else 25),
                                                               timeout=SMTP_TIMEOUT)
        with client:
            if not secure and url.scheme == "smtp+starttls":
                client.starttls()
            if url.username:
                client.login(unquote(url.username), unquote(url.password or ""))
            client.send_message(message)
