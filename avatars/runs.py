"""Training runs and the checkpoints that can render: one rule for every caller.

A **run** is one training of an avatar: the train job that started it (a retry continues it) and the
model folder it writes, ``<model folder>/<slug>/run-<job id>`` on its node. Upstream never empties a
model folder (GaussianTalker train.py:297 ``os.makedirs(exist_ok=True)``; SyncTalk resumes whatever its
workspace holds), so a run of its own is what keeps a shorter retraining from rendering the previous
model. Checkpoints and evaluations belong to their run; the defaults (the validation render after a
training, a video's or a chat reply's checkpoint) use the **newest** run's only. Checkpoints recorded
before runs had folders have no run and count as older than any run.
"""

from __future__ import annotations

from django.db.models import Max, Q, QuerySet

from .engines.registry import ENGINES
from .models import Avatar, Checkpoint, DatasetCopy


def run_of(job) -> int:
    """The run a train job trains: its own id, or the run it continues (``params["run"]``, a retry)."""
    return job.params.get("run") or job.pk


def renderable(checkpoints: QuerySet[Checkpoint]) -> QuerySet[Checkpoint]:
    """Of ``checkpoints`` (any avatars'), those a render can load: each engine's renderable stage."""
    rule = Q(pk__in=[])
    for engine in ENGINES.values():
        rule |= Q(avatar__engine=engine.name, stage=engine.renderable_stage)
    return checkpoints.filter(rule)


def newest_run(avatar: Avatar) -> QuerySet[Checkpoint]:
    """The avatar's checkpoints of its newest run (the checkpoints without a run when it has none)."""
    checkpoints = avatar.checkpoints.all()
    newest = checkpoints.aggregate(newest=Max("run"))["newest"]
    return checkpoints.filter(run=newest) if newest is not None else checkpoints.filter(run__isnull=True)


def default_checkpoint(avatar: Avatar) -> Checkpoint | None:
    """The checkpoint a render uses unless told otherwise: the newest run's latest renderable one
    (GaussianTalker and the demo: ``point_cloud/iteration_N``; SyncTalk: its last epoch)."""
    return renderable(newest_run(avatar)).select_related("node").order_by("-iteration", "-created_at").first()


def render_blocker(checkpoint: Checkpoint) -> str | None:
    """What keeps ``checkpoint``'s node from rendering it: ``"disabled"`` (the node is), ``"no dataset"``
    (the node lacks the avatar's complete preprocessed dataset, which every render reads), or None. The
    caller says it in its own words (a video refuses; a chat reply is then only spoken)."""
    if not checkpoint.node.enabled:
        return "disabled"
    copies = DatasetCopy.objects.filter(
        avatar_id=checkpoint.avatar_id, node_id=checkpoint.node_id, complete=True
    )
    if not copies.exists():
        return "no dataset"
    return None


def rendered_checkpoint(job) -> tuple[int | None, int]:
    """The run and the iteration a render or evaluation job works on: the ones it names, or (a job from
    before every step named them) the newest run's latest renderable checkpoint on its node. Always a
    number: GaussianTalker's ``--iteration -1`` can resolve to a coarse one (see its ``commands._render``)."""
    iteration = job.params.get("iteration", -1)
    if iteration != -1:
        return job.params.get("run"), iteration
    checkpoint = (
        renderable(newest_run(job.avatar)).filter(node=job.node).order_by("-iteration", "-created_at").first()
    )
    if checkpoint is None:
        raise ValueError(f"node {job.node.name} holds no checkpoint of this avatar that can render: train it")
    return checkpoint.run_id, checkpoint.iteration
