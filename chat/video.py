"""A reply's sentences rendered as video on the avatar's node, one shell chain per sentence.

The chat_reply job holds a slot on the node that holds the avatar's checkpoint (``message_send`` pins it
there). :class:`NodeRenderer` keeps one connection to that node for the whole turn, puts our scripts there
once, and for each sentence puts its 16 kHz WAV into ``<workdir>/jobs/<job>/chunk-<k>/``, runs the chain
the videos app uses for a whole video (``videos.job_kind.speech_render``: pose view, audio features,
render, web encode; no poster) with every console line in the job's log, and brings the MP4 back. Each
run carries the job's marker (``TALKFORGE_JOB``), so a stop kills exactly its process tree, as the runner
does for an engine's job; the job's ``pid`` names the running render, so the reconciler can stop it too
if this worker dies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from avatars.models import Avatar, Checkpoint
from gpu_nodes.connect import connection_for
from gpu_nodes.connections import NodeError
from gpu_nodes.runtime import wrap
from jobs.kinds import job_folder
from jobs.models import Job
from jobs.streams import follow
from videos.job_kind import audio_frames, dataset_on, speech_render

logger = logging.getLogger(__name__)


class RenderFailed(Exception):
    """A sentence could not be rendered; the message says why, for the person."""


class RenderStopped(Exception):
    """The turn was stopped while a sentence was rendering; its processes were killed."""


Log = Callable[[str], None]


class NodeRenderer:
    """The avatar's node, ready to render a reply's sentences in order (one at a time: the job holds one
    slot there). ``log`` gets every console line."""

    KILL_GRACE = 2.0
    # Each sentence is a clip started cold on the node: a short first one would end before the second is
    # rendered, so the reply keeps whole sentences (chat.turn, CHAT_FIRST_FRAGMENT_MIN_CHARS).
    streams = False

    def __init__(self, *, job: Job, checkpoint: Checkpoint, log: Log):
        self.job, self.checkpoint = job, checkpoint
        self.avatar: Avatar = checkpoint.avatar
        self.log = log
        try:
            self.dataset = dataset_on(self.avatar, job.node)
        except ValueError as error:
            raise RenderFailed(str(error)) from None
        self.folder = job_folder(job)
        self.conn = connection_for(job.node)
        self.scripts_put = False
        self.process = None

    def frames(self, seconds: float) -> int:
        """How many 25-fps frames (and poses) a sentence of ``seconds`` takes."""
        return audio_frames(seconds)

    def render(
        self, *, index: int, wav: Path, seconds: float, pose_start: int, target: Path,
        should_stop: Callable[[], bool],
    ) -> None:  # fmt: skip
        """Sentence ``index`` (its speech ``wav``) as ``target`` (an H.264/AAC MP4 as long as the speech),
        its poses starting at frame ``pose_start`` of the avatar's ping-pong sequence. ``should_stop`` is
        polled while the render runs: when it turns true the render's processes are killed."""
        folder = self.folder / f"chunk-{index:03d}"
        chain = speech_render(
            job=self.job, avatar=self.avatar, checkpoint=self.checkpoint, dataset=self.dataset, folder=folder,
            wav=folder / "speech.wav", seconds=seconds, pose_start=pose_start, poster=False,
        )  # fmt: skip
        node = self.job.node
        invocation = wrap(
            node=node, gpu=self.job.gpu, argv=chain.argv, name=f"{self.job.container_name}-{index}",
            mounts=[node.workdir], cwd=chain.cwd, env=chain.env,
            engine=self.avatar.engine,
        )  # fmt: skip
        try:
            if not self.scripts_put:
                for local_path, remote_path in chain.scripts:
                    self.conn.put(local_path, remote_path)
                self.scripts_put = True
            self.conn.put(wav, str(folder / "speech.wav"))
            self.process = self.conn.start(
                invocation.argv, marker=self.job.marker, cwd=invocation.cwd, env=invocation.env
            )
        except NodeError as error:
            raise RenderFailed(f"Node {node.name} could not start the render: {error}") from None
        Job.objects.filter(pk=self.job.pk).update(pid=self.process.pid)
        recent: list[str] = []
        returncode = self._follow(
            chain.parser, recent, container=invocation.container, should_stop=should_stop
        )
        self.process = None
        if problem := chain.parser.outcome(returncode):
            tail = "\n".join(line for line in recent[-6:] if line.strip())
            raise RenderFailed(f"{problem}\n{tail}".strip())
        try:
            self.conn.get(str(chain.result), target)
        except NodeError as error:
            raise RenderFailed(f"The rendered sentence could not be fetched: {error}") from None

    def _follow(self, parser, recent: list[str], *, container: str | None, should_stop) -> int:
        """Stream the chain's console into the log until it ends; on a stop, kill its tree and raise."""
        process = self.process

        def lines_read(lines: list[str]) -> None:
            for line in lines:
                parser.feed(line)
                self.log(line)
            recent.extend(lines)
            del recent[:-50]

        returncode = follow(
            process, lines_read, max_line=4000, poll=0.1, drain_seconds=2, should_stop=should_stop
        )
        if returncode is None:
            self._kill(container)
            raise RenderStopped()
        self.conn.kill_tree(process.pid, marker=self.job.marker, grace=0.5)  # whatever it left behind
        return returncode

    def _kill(self, container: str | None) -> None:
        process, self.process = self.process, None
        pid = process.pid if process is not None else None
        self.conn.stop(pid, marker=self.job.marker, grace=self.KILL_GRACE, container=container)

    def close(self) -> None:
        """Stop anything still running and remove the job's folder on the node (the clips are back)."""
        try:
            self._kill(None)
            self.conn.run(["rm", "-rf", "--", str(self.folder)], timeout=120)
        except NodeError:
            logger.warning("could not clean %s on node %s", self.folder, self.job.node.name, exc_info=True)
        finally:
            self.conn.close()
