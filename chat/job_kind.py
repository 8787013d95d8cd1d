"""The chat_reply job: one reply turn (chat.turn.reply_run), run inside the worker that claimed it, next to
the Whisper and XTTS models it loaded once. The job holds a slot on the node of the avatar's checkpoint
(``message_send`` pins it there), where each sentence is rendered (chat.video.NodeRenderer); an avatar
that cannot be rendered is placed like its other steps (nodes holding its data first) and only speaks."""

from __future__ import annotations

from django.urls import reverse

from avatars.job_kinds import data_nodes
from avatars.models import Checkpoint
from avatars.selectors import avatars_visible_to
from core.params import owned_id, reject_unknown
from jobs.kinds import KindSpec, register
from jobs.models import Job

from .events import publisher_for
from .models import Message
from .selectors import messages_visible_to
from .services import CHAT_REPLY
from .turn import reply_run
from .video import NodeRenderer, RenderFailed


def clean_reply(params: dict, *, owner) -> dict:
    """A reply job carries its (pending) assistant message, in one of the owner's conversations, and the
    checkpoint of the owner's avatar that renders it, if any; everything else is on the conversation."""
    reject_unknown(params, {"message", "node", "checkpoint"}, "a chat reply")
    message = owned_id(
        params.get("message"), name="message",
        among=messages_visible_to(owner).filter(role=Message.Role.ASSISTANT),
        refusal="Message {id} is not a reply in one of your conversations.",
    )  # fmt: skip
    if params.get("checkpoint") is None:
        return {"message": message}
    checkpoint = owned_id(
        params["checkpoint"], name="checkpoint",
        among=Checkpoint.objects.filter(avatar__in=avatars_visible_to(owner)),
        refusal="Checkpoint {id} is not one of your avatars' checkpoints.",
    )  # fmt: skip
    return {"message": message, "checkpoint": checkpoint}


def _log_line(event: dict) -> tuple[str, str | None] | None:
    """The job log's line (and stage) for a turn event; tokens go to the websocket only."""
    kind = event["type"]
    if kind == "chat.stage":
        return f"[chat] {event['stage']}", {"asr": "recognising speech", "llm": "writing"}[event["stage"]]
    if kind == "chat.transcript":
        return f"[chat] heard ({event['language']}): {event['text']}", None
    if kind == "chat.chunk":
        line = f"[chat] sentence {event['index'] + 1} spoken by {event['voice_engine']}: {event['text']}"
        return line, "speaking"
    if kind == "chat.video":
        if event["on"]:
            return "[chat] each sentence is rendered on this node as soon as it is spoken", None
        # The note's first line: the render's own last lines, which it quotes, are in the log already.
        return (f"[chat] spoken only: {event['note'].splitlines()[0]}", None) if event["note"] else None
    if kind == "chat.chunk_video":
        line = (f"[chat] sentence {event['index'] + 1} rendered in {event['render']:.2f} s: "
                f"{event['frames']} frames from pose {event['pose_start']}")  # fmt: skip
        return line, "rendering"
    if kind == "chat.reply":
        timings = ", ".join(f"{key} {seconds:.2f} s" for key, seconds in event["timings"].items())
        return f"[chat] reply {event['status']} ({timings}) {event['error']}".strip(), None
    return None


def run_reply(job: Job, context) -> dict:
    # Re-checked at run time: the reply is in one of the job owner's conversations.
    reply = messages_visible_to(job.owner).get(pk=job.params["message"], role=Message.Role.ASSISTANT)
    to_socket = publisher_for(reply.conversation_id)

    def publish(event: dict) -> None:
        to_socket(event)
        if logged := _log_line(event):
            context.log(logged[0], stage=logged[1])

    reply.job = job
    reply.save(update_fields=["job"])
    renderer = _renderer(job, reply, context)
    try:
        reply = reply_run(reply=reply, publish=publish, should_stop=context.should_stop, renderer=renderer)
    finally:
        if renderer is not None:
            renderer.close()
    result = {
        "message": reply.pk, "status": reply.status, "chunks": reply.chunks.count(), "timings": reply.timings,
    }  # fmt: skip
    if reply.status == Message.Status.FAILED:
        result["error"] = reply.error
    return result


def _renderer(job: Job, reply: Message, context) -> NodeRenderer | None:
    """The node renderer for this turn, or None with the reason on the reply (it is spoken only)."""
    if not job.params.get("checkpoint"):
        return None
    checkpoint = (
        Checkpoint.objects.select_related("avatar", "node")
        .filter(pk=job.params["checkpoint"], avatar__owner=job.owner_id)
        .first()
    )
    note = ""
    if checkpoint is None:
        note = "The avatar's checkpoint was deleted after this message was sent: send it again."
    elif checkpoint.node_id != job.node_id:
        note = (
            f"This reply runs on node {job.node.name}, not on {checkpoint.node.name}, which holds the model."
        )
    else:
        try:
            return NodeRenderer(job=job, checkpoint=checkpoint, log=context.log)
        except RenderFailed as error:
            note = str(error)
    reply.video_note = note
    reply.save(update_fields=["video_note"])
    return None


def after_reply(job: Job) -> None:
    """A job that ended before its turn did (canceled while waiting, its worker lost) ends the reply too."""
    ended = {Job.Status.CANCELED: Message.Status.CANCELED, Job.Status.FAILED: Message.Status.FAILED}
    if job.status in ended:
        Message.objects.filter(
            pk=job.params.get("message"), status__in=[Message.Status.PENDING, Message.Status.RUNNING]
        ).update(status=ended[job.status], error=job.error[:2000] or "The reply was stopped.")


def reply_subject(job: Job) -> tuple[str, str] | None:
    """The conversation a reply belongs to, for the job's pages (None once it is deleted)."""
    reply = Message.objects.filter(pk=job.params.get("message")).select_related("conversation").first()
    if reply is None:
        return None
    conversation = reply.conversation
    return f"Conversation {conversation}", reverse("chat-conversation", args=[conversation.pk])


def register_kind() -> None:
    register(
        CHAT_REPLY,
        KindSpec(label="Chat reply", gpu_work="render", plan=None, clean=clean_reply, after=after_reply,
                 prefer=data_nodes, run=run_reply,
                 # A reply without a checkpoint is spoken only (no render): any worker can make it.
                 uses_engine=lambda job: bool(job.params.get("checkpoint")), subject=reply_subject),
    )  # fmt: skip
