"""The admin lists voices, conversations and messages, and never shows a conversation's API key; it lists
live render sessions and ends them, to staff only."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from accounts.models import User
from chat import live, services
from chat.models import Chunk, LiveSession, Message
from gpu_nodes.connections import LocalConnection
from tests.chat.test_live import trained
from tests.chat.test_services import make_avatar


def test_admin_pages_render_without_the_api_key(alice, client):
    admin = User.objects.create_superuser("root", password="root-password-1")
    conversation = services.conversation_create(
        owner=alice, avatar=make_avatar(alice), llm_api_key="sk-secret-never-shown"
    )
    message = Message.objects.create(conversation=conversation, role="assistant", text="Hello there.")
    Chunk.objects.create(message=message, index=0, text="Hello there.")
    client.force_login(admin)
    pages = [
        "/admin/chat/voice/",
        "/admin/chat/conversation/",
        f"/admin/chat/conversation/{conversation.pk}/change/",
        "/admin/chat/message/",
        f"/admin/chat/message/{message.pk}/change/",
    ]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        body = response.content.decode()
        assert "sk-secret-never-shown" not in body
        assert conversation.llm_api_key_encrypted not in body


@pytest.mark.django_db(transaction=True)
def test_staff_see_live_sessions_and_end_one_others_get_no_access(
    alice, make_node, client, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path / "media"
    node = make_node()
    conn = LocalConnection(node)
    # Two real demo sessions (processes on the local node), as a conversation's first turn starts them.
    ada = live.live_session_ready(checkpoint=trained(alice, node, name="Ada").checkpoints.get(),
                                  publish=lambda event: None)  # fmt: skip
    bo = live.live_session_ready(checkpoint=trained(alice, node, name="Bo").checkpoints.get(),
                                 publish=lambda event: None)  # fmt: skip
    started = timezone.now() - timedelta(hours=1, minutes=2, seconds=3)
    LiveSession.objects.filter(pk=ada.pk).update(
        started_at=started, turns=7, last_latency=0.42, memory_mb=1536
    )  # as a GPU engine's session that served a few turns
    url = "/admin/chat/livesession/"
    try:
        # Not staff: the admin's login page, for the list and for the action; nothing ends.
        client.force_login(alice)
        assert client.get(url).url.startswith("/admin/login/")
        response = client.post(url, {"action": "end_sessions", "_selected_action": [ada.pk]})
        assert response.status_code == 302 and response.url.startswith("/admin/login/")
        ada.refresh_from_db()
        assert ada.state == LiveSession.State.READY and conn.is_running(ada.pid, marker=ada.marker)

        staff = User.objects.create_superuser("root", password="root-password-1")
        client.force_login(staff)
        page = client.get(url).content.decode()
        row = page[page.index(f"live session {ada.pk} (demo, ready)") :]
        row = row[: row.index("</tr>")]
        gpu = ada.gpu
        assert str(gpu) == f"{node.name}:CPU"
        for cell in (
            f'<td class="field-node nowrap">{node.name}</td>',
            f'<td class="field-gpu nowrap">{gpu}</td>',
            '<td class="field-memory_mb">1536</td>',
            '<td class="field-age">1h 02m 0',  # 03 s, or a second more by now
            '<td class="field-turns">7</td>',
            '<td class="field-last_latency">0.42</td>',
        ):
            assert cell in row, (cell, row[-900:])
        assert f"live session {bo.pk} (demo, ready)" in page

        response = client.post(url, {"action": "end_sessions", "_selected_action": [ada.pk]}, follow=True)
        assert "1 live session(s) ended." in response.content.decode()
        ada.refresh_from_db(), bo.refresh_from_db()
        assert ada.state == LiveSession.State.ENDED and ada.note == "Ended by root in the admin."
        assert ada.ended_at is not None
        assert not conn.is_running(ada.pid, marker=ada.marker) and not Path(ada.socket).exists()
        assert bo.state == LiveSession.State.READY and conn.is_running(bo.pid, marker=bo.marker)
        # Ending it again (an ended session) does nothing.
        response = client.post(url, {"action": "end_sessions", "_selected_action": [ada.pk]}, follow=True)
        assert "0 live session(s) ended." in response.content.decode()
    finally:
        for session in (ada, bo):
            live.live_session_end(session=session, reason="test over")
