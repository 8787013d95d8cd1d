"""Telling a person that something they started has ended (a training, a video): a notice in every page
they have open (their jobs stream, /ws/jobs/, shown by static/js/notices.js) and, when NOTIFY_BY_EMAIL is
on and they have an address, an e-mail through Django's mail settings (EMAIL_BACKEND, EMAIL_HOST, …)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction

from . import events

logger = logging.getLogger(__name__)


def notify(*, user, subject: str, text: str, url: str, ok: bool = True) -> None:
    """Once the current transaction commits: the notice to the person's pages, and the e-mail."""
    events.publish_on_commit(
        events.user_group(user.pk),
        {"type": "job.notice", "subject": subject, "text": text, "url": url, "ok": ok},
    )
    if not (settings.NOTIFY_BY_EMAIL and user.email):
        return

    def mail() -> None:
        link = f"{settings.NOTIFY_SITE_URL.rstrip('/')}{url}" if settings.NOTIFY_SITE_URL else url
        try:
            send_mail(f"Talkforge: {subject}", f"{text}\n\n{link}\n", None, [user.email])
        except Exception:  # a mail server that is down must not fail the job's ending
            logger.exception("could not e-mail %s about %r", user.pk, subject)

    transaction.on_commit(mail)
