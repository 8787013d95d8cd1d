"""Live render sessions: the avatar's model stays loaded on its node and each sentence of a reply streams to
the browser as fragmented MP4 while it renders (the node side: avatars/engines/node/live_session.py).

- **Admission** (:func:`live_session_admit`): one session per (checkpoint, GPU), shared by every
  conversation of that checkpoint. A GPU admits a new one while its memory at the last probe, minus what the
  jobs running on it and the other sessions there need, covers the engine's ``session_memory_mb()``; a CPU
  slot (the demo) admits ``LIVE_SESSIONS_PER_CPU_SLOT``. Refused, the reply is spoken only and the
  conversation is told why (``chat.live`` ``spoken_only``).
- **Lifecycle**: started by the conversation's first turn (or its page's ``warm_up``) in the worker that
  serves the node's queue; ended after ``LIVE_IDLE_SECONDS`` unused (by :func:`live_sessions_reconcile`,
  and by the process itself), when the conversation is deleted, when its node is disabled or offline. A
  session that dies mid-turn is started again once; if that fails too, the rest of the reply is spoken.
- **Rendering** (:class:`LiveRenderer`, in place of chat.video.NodeRenderer): the sentence's 16 kHz WAV is
  put on the node, a render request goes to the session, and every fMP4 piece is published to the
  conversation's group (``chat.segment``) as it arrives; the whole sentence is saved as the chunk's video.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.utils import timezone

from avatars.engines import live as wire
from avatars.models import Checkpoint
from gpu_nodes.connect import connection_for
from gpu_nodes.connections import NodeError
from gpu_nodes.models import Gpu, Node
from gpu_nodes.runtime import wrap
from jobs.models import Job
from videos.job_kind import audio_frames, dataset_on

from .models import LiveSession
from .video import RenderFailed, RenderStopped

logger = logging.getLogger(__name__)

Publish = Callable[[dict], None]


class LiveRefused(Exception):
    """No session for this turn; the message is for the person (the reply is spoken only)."""


# --- admission ------------------------------------------------------------------------------------------


def _gpu_free_mb(gpu: Gpu) -> int:
    """What ``gpu`` can still give a session: its memory at the last probe, less the running jobs' needs
    (their engines' figures) and the other live sessions' on it."""
    used = gpu.memory_used_mb
    for job in Job.objects.filter(gpu=gpu, status__in=Job.ACTIVE_STATUSES).select_related("avatar"):
        engine = job.avatar.engine_plugin if job.avatar_id else None
        used = max(used, 0) + (engine.gpu_mb(job.kind) if engine is not None else 0)
    sessions = LiveSession.objects.filter(gpu=gpu, state__in=LiveSession.LIVE_STATES)
    used += sessions.aggregate(total=Sum("memory_mb"))["total"] or 0
    return gpu.memory_total_mb - used


def live_session_admit(*, checkpoint: Checkpoint) -> tuple[LiveSession, bool]:
    """The live session that renders ``checkpoint``'s replies: the running one, shared, or a new one
    (``starting``, not yet started: the caller starts it). Returns (session, new). LiveRefused says why
    none can be had."""
    avatar = checkpoint.avatar
    engine = avatar.engine_plugin
    if not settings.LIVE_SESSIONS:
        raise LiveRefused("Live rendering is off on this platform (LIVE_SESSIONS).")
    if engine.live_backend is None:
        raise LiveRefused(f"{engine.label} has no live render session.")
    node = checkpoint.node
    if not node.accepts_jobs:
        raise LiveRefused(f"Node {node.name}, which holds the model, is not taking work now.")
    need = engine.session_memory_mb()
    with transaction.atomic():
        gpus = list(
            Gpu.objects.select_for_update().filter(node=node, present=True).order_by("index")
        )  # one admission at a time per node
        shared = (
            LiveSession.objects.filter(checkpoint=checkpoint, node=node, state__in=LiveSession.LIVE_STATES)
            .order_by("pk")
            .first()
        )
        if shared is not None:
            return shared, False
        if not engine.needs_gpu:
            slots = [gpu for gpu in gpus if gpu.is_cpu] or gpus
            per_slot = settings.LIVE_SESSIONS_PER_CPU_SLOT
            for gpu in slots:
                count = LiveSession.objects.filter(gpu=gpu, state__in=LiveSession.LIVE_STATES).count()
                if count < per_slot:
                    return _create(checkpoint=checkpoint, gpu=gpu, engine=engine, memory_mb=0), True
            raise LiveRefused(
                f"Node {node.name} already runs {per_slot} live sessions per CPU slot, its limit "
                "(LIVE_SESSIONS_PER_CPU_SLOT): this reply is only spoken."
            )
        best = None
        for gpu in gpus:
            if gpu.is_cpu:
                continue
            free = _gpu_free_mb(gpu)
            if free >= need and (best is None or free > best[1]):
                best = (gpu, free)
        if best is None:
            most = max((_gpu_free_mb(gpu) for gpu in gpus if not gpu.is_cpu), default=0)
            raise LiveRefused(
                f"No GPU of node {node.name} has the {need} MB a live {engine.label} session needs (the most "
                f"free is {max(most, 0)} MB, after the trainings, renders and sessions running there): this "
                "reply is only spoken."
            )
        return _create(checkpoint=checkpoint, gpu=best[0], engine=engine, memory_mb=need), True


def _create(*, checkpoint, gpu, engine, memory_mb) -> LiveSession:
    try:
        with transaction.atomic():
            return LiveSession.objects.create(
                node=checkpoint.node, gpu=gpu, checkpoint=checkpoint, engine=engine.name, memory_mb=memory_mb
            )
    except IntegrityError:  # another turn created it meanwhile: share that one
        return LiveSession.objects.get(checkpoint=checkpoint, gpu=gpu, state__in=LiveSession.LIVE_STATES)


# --- starting and ending --------------------------------------------------------------------------------

_processes: dict[int, object] = {}  # session id → the RunningProcess that started it (reaped at its end)


def live_session_start(*, session: LiveSession) -> LiveSession:
    """Start ``session``'s process on its node and wait until its model is loaded: ``ready``, or ``failed``
    with the reason in ``note`` (LiveRefused is raised with it)."""
    checkpoint = Checkpoint.objects.select_related("avatar", "node").get(pk=session.checkpoint_id)
    avatar, node = checkpoint.avatar, session.node
    engine = avatar.engine_plugin
    try:
        dataset = dataset_on(avatar, node)
        config = engine.live_config(
            checkpoint=checkpoint, dataset=dataset, model=PurePosixPath(checkpoint.path)
        )
        command = wire.session_command(
            engine=engine, node=node, name=session.name, config=config,
            idle_seconds=settings.LIVE_IDLE_SECONDS + 30,  # the platform ends it first; this is the backstop
        )  # fmt: skip
        invocation = wrap(
            node=node, gpu=session.gpu, argv=command.argv, name=f"talkforge-{session.marker}",
            mounts=[node.workdir], cwd=command.cwd, env=command.env, engine=avatar.engine,
        )  # fmt: skip
        conn = connection_for(node)
        for local_path, remote_path in command.scripts:
            conn.put(local_path, remote_path)
        process = conn.start(invocation.argv, marker=session.marker, cwd=invocation.cwd, env=invocation.env)
        LiveSession.objects.filter(pk=session.pk).update(pid=process.pid, socket=command.socket)
        facts = wire.wait_ready(process, timeout=settings.LIVE_START_TIMEOUT)
    except (NodeError, ValueError) as error:
        note = f"The live session could not start on node {node.name}: {error}"[:2000]
        LiveSession.objects.filter(pk=session.pk).update(state=LiveSession.State.FAILED, note=note,
                                                         ended_at=timezone.now())  # fmt: skip
        session.refresh_from_db()
        if session.pid:
            _kill(session)
        raise LiveRefused(note) from None
    _processes[session.pk] = process
    LiveSession.objects.filter(pk=session.pk).update(
        state=LiveSession.State.READY, load_seconds=facts.get("load_s"), last_used_at=timezone.now()
    )
    session.refresh_from_db()
    return session


def live_session_ready(*, checkpoint: Checkpoint, publish: Publish) -> LiveSession:
    """A ready session for ``checkpoint`` (admitted, started, or waited for when another turn is starting
    it), announcing ``chat.live`` states; LiveRefused (announced ``spoken_only``) when none can be had."""
    try:
        session, new = live_session_admit(checkpoint=checkpoint)
        if session.state == LiveSession.State.READY:
            return session
        loading = f"Loading {checkpoint.avatar.name}'s model on node {checkpoint.node.name}…"
        publish({"type": "chat.live", "state": "starting", "reason": loading})
        if new:
            session = live_session_start(session=session)
        else:
            deadline = time.monotonic() + settings.LIVE_START_TIMEOUT
            while session.state == LiveSession.State.STARTING and time.monotonic() < deadline:
                time.sleep(0.2)
                session.refresh_from_db()
            if session.state != LiveSession.State.READY:
                raise LiveRefused(session.note or "The live session did not get ready in time.")
    except LiveRefused as refusal:
        publish({"type": "chat.live", "state": "spoken_only", "reason": str(refusal)})
        raise
    publish({"type": "chat.live", "state": "ready",
             "reason": f"The model is loaded ({session.load_seconds or 0:.1f} s)."})  # fmt: skip
    return session


def _kill(session: LiveSession) -> None:
    try:
        conn = connection_for(session.node)
        if session.pid:
            conn.kill_tree(session.pid, marker=session.marker, grace=1.0)
        if session.socket:
            conn.run(["rm", "-f", "--", session.socket, f"{session.socket}.ready"], timeout=30)
    except NodeError:
        logger.warning(
            "could not stop live session %s on node %s", session.pk, session.node.name, exc_info=True
        )
    process = _processes.pop(session.pk, None)
    if process is not None:
        with contextlib.suppress(NodeError):
            process.wait(0)  # reap it when it ran from this worker


def live_session_end(*, session: LiveSession, reason: str, state: str = LiveSession.State.ENDED) -> None:
    """Stop the session's process on its node (only its marked processes) and record why."""
    ended = LiveSession.objects.filter(pk=session.pk, state__in=LiveSession.LIVE_STATES).update(
        state=state, ended_at=timezone.now(), note=reason[:2000]
    )
    if ended:
        _kill(session)


def live_sessions_end_for_checkpoints(checkpoint_ids, *, reason: str) -> None:
    """End the sessions of these checkpoints that no other conversation is using (a deleted conversation)."""
    for session in LiveSession.objects.filter(
        checkpoint__in=checkpoint_ids, state__in=LiveSession.LIVE_STATES
    ):
        live_session_end(session=session, reason=reason)


def live_sessions_reconcile() -> list[int]:
    """Housekeeping: end sessions unused for ``LIVE_IDLE_SECONDS``, those on disabled or offline nodes, and
    mark as failed those whose process is gone. Returns the ids ended."""
    ended = []
    idle_since = timezone.now() - timedelta(seconds=settings.LIVE_IDLE_SECONDS)
    start_limit = timezone.now() - timedelta(seconds=settings.LIVE_START_TIMEOUT + 60)
    for session in LiveSession.objects.filter(state__in=LiveSession.LIVE_STATES).select_related("node"):
        node = session.node
        if not node.enabled or node.status != Node.Status.ONLINE:
            live_session_end(session=session, reason=f"Node {node.name} was disabled or went offline.")
        elif session.state == LiveSession.State.READY and session.last_used_at < idle_since:
            live_session_end(session=session, reason=f"Unused for {settings.LIVE_IDLE_SECONDS:.0f} s.")
        elif session.state == LiveSession.State.STARTING and session.started_at < start_limit:
            live_session_end(session=session, reason="It never got ready.", state=LiveSession.State.FAILED)
        elif session.state == LiveSession.State.READY and not _alive(session):
            live_session_end(session=session, reason="Its process is gone.", state=LiveSession.State.FAILED)
        else:
            continue
        ended.append(session.pk)
    return ended


def _alive(session: LiveSession) -> bool:
    try:
        return connection_for(session.node).is_running(session.pid, marker=session.marker)
    except NodeError:
        return True  # unreachable now: the node's probe decides; ended when it is marked offline


# --- barge-in -------------------------------------------------------------------------------------------


def _barge_key(reply) -> str:
    # The reply's id and creation time: ids start again in a new database, the shared cache does not.
    return f"chat-barge-in:{reply.pk}:{reply.created_at.timestamp():.6f}"


def barge_in_signal(reply) -> None:
    """The person spoke over ``reply``: its turn (in the worker) stops the session's render now, without
    waiting for the job's cancel to be noticed."""
    cache.set(_barge_key(reply), 1, timeout=600)


def barged_in(reply) -> bool:
    return bool(cache.get(_barge_key(reply)))


# --- rendering ------------------------------------------------------------------------------------------


class LiveRenderer:
    """Renders a reply's sentences through the checkpoint's live session (chat.turn.render_chunk calls
    ``render`` as it calls NodeRenderer's), publishing each fMP4 piece as it arrives."""

    # Frames stream from a warm session, faster than they play: the reply's first piece may be a clause
    # (chat.sentences, CHAT_FIRST_FRAGMENT_MIN_CHARS), the next one is ready before it has been heard.
    streams = True

    def __init__(self, *, session: LiveSession, reply, publish: Publish, clock=None):
        self.session, self.reply, self.publish, self.clock = session, reply, publish, clock
        self.conn = connection_for(session.node)
        self.link: wire.SessionLink | None = None
        self.folder = PurePosixPath(session.node.workdir) / "live" / f"reply-{reply.pk}"
        self.restarted = False

    def frames(self, seconds: float) -> int:
        return audio_frames(seconds)

    def _link(self) -> wire.SessionLink:
        if self.link is None:
            marker = f"{self.session.marker}-reply-{self.reply.pk}"
            link = wire.open_link(self.conn, self.session.node, self.session.socket, marker=marker, wait=2)
            # The session serves one conversation at a time: when another one's sentence is rendering, the
            # ping is answered only after it, and the page says why the avatar waits.
            link.send({"op": "ping"})
            if not self._pong(link, 0.5):
                busy = "The avatar's session is finishing another conversation's sentence."
                self.publish({"type": "chat.live", "state": "waiting", "reason": busy})
                if not self._pong(link, 120):
                    link.close()
                    raise _SessionFailed("the live session did not answer for 2 minutes")
                self.publish({"type": "chat.live", "state": "ready", "reason": "The session is free again."})
            self.link = link
        return self.link

    @staticmethod
    def _pong(link: wire.SessionLink, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = link.receive(deadline - time.monotonic())
            if message is not None and message[0].get("op") == "pong":
                return True
        return False

    def render(
        self, *, index: int, wav: Path, seconds: float, pose_start: int, target: Path, should_stop
    ) -> None:
        remote = str(self.folder / f"chunk-{index:03d}.wav")
        try:
            self.conn.put(wav, remote)
        except NodeError as error:
            raise RenderFailed(f"The sentence's audio could not be put on the node: {error}") from None
        try:
            self._render(index, remote, pose_start, target, should_stop)
        except (NodeError, _SessionFailed) as error:
            if should_stop():
                raise RenderStopped() from None
            if self.restarted:
                raise RenderFailed(f"The live session failed again after a restart: {error}") from None
            self._restart(error)
            try:
                self._render(index, remote, pose_start, target, should_stop)
            except (NodeError, _SessionFailed) as again:
                raise RenderFailed(f"The live session failed again after a restart: {again}") from None

    def _restart(self, error) -> None:
        """The session died (or its link did): start it again, once per turn."""
        self.restarted = True
        self.close_link()
        old = self.session
        live_session_end(
            session=old, reason=f"It failed during a turn: {error}", state=LiveSession.State.FAILED
        )
        self.publish({"type": "chat.live", "state": "starting",
                      "reason": "The live session stopped; starting it again…"})  # fmt: skip
        checkpoint = Checkpoint.objects.select_related("avatar", "node").get(pk=old.checkpoint_id)
        try:
            session, new = live_session_admit(checkpoint=checkpoint)
            if new:
                session = live_session_start(session=session)
        except LiveRefused as refusal:
            raise RenderFailed(f"The live session failed and could not start again: {refusal}") from None
        LiveSession.objects.filter(pk=session.pk).update(restarts=old.restarts + 1)
        self.session = session
        self.publish({"type": "chat.live", "state": "ready", "reason": "The live session was started again."})

    def _render(self, index, remote, pose_start, target: Path, should_stop) -> None:
        link = self._link()
        pieces = 0
        asked = time.monotonic()
        with open(target, "wb") as out:
            for header, payload in link.render(ident=index, wav=remote, pose_start=pose_start,
                                               should_stop=should_stop):  # fmt: skip
                if "piece" in header:
                    if pieces == 0:
                        latency = round(time.monotonic() - asked, 3)
                        LiveSession.objects.filter(pk=self.session.pk).update(last_latency=latency)
                        if self.clock is not None:
                            self.clock.mark("first_frame_rendered")
                    out.write(payload)
                    self._segment(index, pieces, payload, last=False)
                    pieces += 1
                    continue
                if header.get("stopped"):
                    self._segment(index, pieces, b"", last=True)
                    raise RenderStopped()
                if header.get("error"):
                    raise _SessionFailed(header["error"])
                self._segment(index, pieces, b"", last=True)
                LiveSession.objects.filter(pk=self.session.pk).update(last_used_at=timezone.now())
                return
        raise _SessionFailed("the session ended the render without an answer")

    def _segment(self, index: int, seq: int, data: bytes, *, last: bool) -> None:
        self.publish({"type": "chat.segment", "message": self.reply.pk, "index": index, "seq": seq,
                      "last": last, "data": data})  # fmt: skip

    def turn_done(self) -> None:
        LiveSession.objects.filter(pk=self.session.pk).update(
            last_used_at=timezone.now(), turns=F("turns") + 1
        )

    def close_link(self) -> None:
        if self.link is not None:
            try:
                self.link.close()
            except NodeError:
                logger.warning("could not close the live link of reply %s", self.reply.pk, exc_info=True)
            self.link = None

    def close(self) -> None:
        self.close_link()
        try:
            self.conn.run(["rm", "-rf", "--", str(self.folder)], timeout=60)
        except NodeError:
            logger.warning("could not clean %s", self.folder, exc_info=True)


class _SessionFailed(Exception):
    """The session answered a render with an error (or hung up): a restart may help."""
