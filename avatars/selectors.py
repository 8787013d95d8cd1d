from django.db.models import QuerySet, Sum

from core import media

from .models import Avatar, Checkpoint, DatasetCopy


def avatars_visible_to(user) -> QuerySet[Avatar]:
    """Only the owner sees an avatar — these are people's faces and voices; staff use the admin."""
    if not user.is_authenticated:
        return Avatar.objects.none()
    return (
        Avatar.objects.filter(owner=user)
        .select_related("preferred_node")
        .prefetch_related("datasets__node", "evaluations")
    )


def avatars_storage_bytes(user) -> int:
    """What the person's avatars take (their quota, accounts/quotas.py): their uploads in the media store,
    and their datasets and checkpoints on the nodes."""
    slugs = Avatar.objects.filter(owner=user).values_list("slug", flat=True)
    total = sum(media.size(f"avatars/{slug}") for slug in slugs)
    total += Checkpoint.objects.filter(avatar__owner=user).aggregate(n=Sum("size_bytes"))["n"] or 0
    total += DatasetCopy.objects.filter(avatar__owner=user).aggregate(n=Sum("size_bytes"))["n"] or 0
    return total


TYPICAL_SAMPLE = 10  # the owner's last runs of a step that an estimate of its duration is drawn from


def _typical_seconds(avatar: Avatar, kind: str) -> float | None:
    """How long ``kind`` usually takes for this person with this engine: the median of their last
    successful runs of it; None when they have none yet."""
    from jobs.models import Job

    spans = [
        (job.finished_at - job.started_at).total_seconds()
        for job in Job.objects.filter(
            owner_id=avatar.owner_id, kind=kind, status=Job.Status.SUCCEEDED, avatar__engine=avatar.engine,
            started_at__isnull=False, finished_at__isnull=False,
        ).order_by("-finished_at")[:TYPICAL_SAMPLE]
    ]  # fmt: skip
    if not spans:
        return None
    spans.sort()
    middle = len(spans) // 2
    return spans[middle] if len(spans) % 2 else (spans[middle - 1] + spans[middle]) / 2


def avatar_pipeline(avatar: Avatar) -> dict | None:
    """The newest training pipeline (preprocess → train → render validation → evaluate, avatars/pipeline.py)
    as its steps with their times: the jobs it has run so far (each step's parent is the one before), the
    steps still to come with how long they usually take, and for the whole: when it began and about how
    long is left (None when a step still to come has never run for this person, so nothing honest can be
    said). None before the avatar's first training."""
    from jobs.kinds import kind_label

    from .pipeline import PIPELINE_KINDS

    newest = (
        avatar.jobs.filter(kind__in=PIPELINE_KINDS)
        .select_related("node", "parent")
        .order_by("-created_at", "-id")
        .first()
    )
    if newest is None:
        return None
    chain = [newest]
    while (
        (parent := chain[-1].parent) is not None
        and parent.kind in PIPELINE_KINDS
        and parent.avatar_id == avatar.pk
    ):
        chain.append(avatar.jobs.select_related("node", "parent").get(pk=parent.pk))
    chain.reverse()
    order = list(PIPELINE_KINDS)
    going = newest.is_active or (newest.status == "succeeded" and avatar.status == Avatar.Status.TRAINING)
    to_come = order[order.index(newest.kind) + 1 :] if going else []
    steps = [{"kind": job.kind, "label": kind_label(job.kind), "job": job} for job in chain]
    steps += [
        {"kind": kind, "label": kind_label(kind), "job": None, "typical": _typical_seconds(avatar, kind)}
        for kind in to_come
    ]
    after = [step["typical"] for step in steps if step["job"] is None]
    after_seconds = None if None in after else sum(after)
    current_left: float | None = 0.0
    if newest.is_active:  # the engine's own estimate, else what this step usually takes less what it ran
        current_left = newest.eta_seconds
        if current_left is None and (typical := _typical_seconds(avatar, newest.kind)) is not None:
            ran = newest.duration.total_seconds() if newest.duration else 0.0
            current_left = max(0.0, typical - ran)
    left = None
    if going and current_left is not None and after_seconds is not None:
        left = current_left + after_seconds
    root = chain[0]
    began = root.started_at or root.created_at
    ended = None if going or not newest.is_terminal else newest.finished_at
    return {
        "steps": steps,
        "current": newest if going else None,
        "began": began,
        "ended": ended,
        "took_seconds": (ended - began).total_seconds() if ended else None,
        "after_seconds": after_seconds,  # what the steps after the current one add to its time left
        "left_seconds": left,
        "going": going,
    }
