from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import F
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.authentication import login_or_token_required
from core.errors import ServiceError
from core.http import delete_confirmation, form_errors, private_file, wants_json
from gpu_nodes.models import Node
from jobs.kinds import kind_label

from . import pipeline
from .forms import AvatarCreateForm
from .models import Avatar
from .pipeline import avatar_cancel, avatar_evaluate, avatar_failed_step, avatar_retry, avatar_train
from .runs import newest_run, renderable, run_of
from .selectors import avatar_pipeline, avatars_visible_to
from .services import avatar_create, avatar_delete, avatar_proceed_anyway
from .uploads import upload_too_large_message

# What a person does next with an avatar in each state: (label, URL name, button id), shown on its card.
NEXT_STEP = {
    Avatar.Status.NEEDS_ATTENTION: ("Review the video checks", "avatar-detail"),
    Avatar.Status.READY_TO_TRAIN: ("Train it", "avatar-detail"),
    Avatar.Status.TRAINING: ("Watch the training", "avatar-detail"),
    Avatar.Status.FAILED: ("See what failed", "avatar-detail"),
}


def home(request):
    """``/``: what Talkforge is, for a visitor; for a signed-in person their avatars, each with its state
    and next step (create → train → generate or chat), and their running jobs."""
    if not request.user.is_authenticated:
        return render(request, "landing.html")
    from jobs.forms import DemoTrainForm
    from jobs.models import Job
    from jobs.selectors import jobs_visible_to

    avatars = list(avatars_visible_to(request.user).order_by("-created_at"))
    for avatar in avatars:
        scored = [e for e in avatar.evaluations.all() if e.psnr is not None]
        avatar.best = max(scored, key=lambda e: e.psnr) if scored else None
        avatar.next_step = NEXT_STEP.get(avatar.status)
    mine = jobs_visible_to(request.user).filter(owner=request.user)
    context = {
        "avatars": avatars,
        "active": mine.filter(status__in=Job.ACTIVE_STATUSES).order_by("created_at"),
        "recent": mine.exclude(status__in=Job.ACTIVE_STATUSES)[:10],
        "form": DemoTrainForm(),
    }
    return render(request, "avatars/home.html", context)


@login_required
def avatar_list(request):
    return render(request, "avatars/avatar_list.html", {"avatars": avatars_visible_to(request.user)})


@login_required
def avatar_new(request):
    """The upload form. The page's script sends it with XMLHttpRequest to show upload progress, and gets
    JSON back; without script it is an ordinary form post."""
    form = AvatarCreateForm(request.POST or None, request.FILES or None)
    if request.method == "POST":
        if getattr(request, "upload_too_large", False):
            form.add_error("video", upload_too_large_message())
        elif form.is_valid():
            data = form.cleaned_data
            try:
                avatar = avatar_create(
                    owner=request.user, name=data["name"], engine=data["engine"], video=data["video"],
                    au_csv=data["au_csv"], consent=data["consent"], preferred_node=data["preferred_node"],
                    trim_start=data["trim_start"], trim_end=data["trim_end"],
                )  # fmt: skip
            except ServiceError as error:
                form.add_error(None, str(error))
            else:
                url = reverse("avatar-detail", args=[avatar.pk])
                if wants_json(request):
                    return JsonResponse({"redirect": url}, status=201)
                return redirect(url)
        if wants_json(request):
            return JsonResponse({"errors": form_errors(form)}, status=400)
    limits = {
        "max_bytes": settings.MAX_UPLOAD_BYTES,
        "min_seconds": settings.AVATAR_MIN_SECONDS,
        "max_seconds": settings.AVATAR_MAX_SECONDS,
        "max_minutes": settings.AVATAR_MAX_SECONDS / 60,
        "min_side": settings.AVATAR_MIN_SIDE_PIXELS,
    }
    return render(request, "avatars/avatar_new.html", {"form": form, **limits})


def _preprocessing_stages(avatar: Avatar, job) -> list[dict]:
    """process.py's tasks as a table, with how far the newest preprocessing got (the page's script then
    follows the live job): done before its current stage, running or failed at it, pending after it."""
    tasks = avatar.engine_plugin.preprocess_tasks
    stages = [task.stage for task in tasks]
    current = stages.index(job.stage) if job is not None and job.stage in stages else -1
    rows = []
    for index, task in enumerate(tasks):
        if job is None:
            state = "pending"
        elif job.status == "succeeded" or index < current:
            state = "done"
        elif index == current:
            state = {"failed": "failed", "canceled": "canceled"}.get(job.status, "running")
        else:
            state = "pending"
        label = task.label or task.starts[0].removesuffix(" from").removesuffix(" for").capitalize()
        rows.append({"number": task.number, "stage": task.stage, "label": label, "state": state})
    return rows


def _curve_axis(avatar: Avatar, train) -> dict:
    """The training chart's horizontal axis: its total iterations and its stages in order (the engine's
    ``training_phases``), so progress becomes iterations and each hand-over is marked."""
    if train is None:
        return {"total": 0, "phases": []}
    try:
        phases = avatar.engine_plugin.training_phases(train.params)
    except ValueError:  # settings from before today's rules: the chart falls back to percent
        phases = []
    listed = [{"stage": p.stage, "iterations": p.iterations, "note": p.note} for p in phases]
    return {"total": sum(p.iterations for p in phases), "phases": listed}


def _validation_file(avatar: Avatar, name: str) -> str:
    """The newest successful validation render's collected file ``name`` (a media path), or ""."""
    render = (
        avatar.jobs.filter(kind=pipeline.RENDER_VALIDATION, status="succeeded")
        .order_by("-finished_at")
        .first()
    )
    return render.result.get("files", {}).get(name, "") if render else ""


def _training_runs(avatar: Avatar, evaluations: list) -> list[dict]:
    """The avatar's training runs, newest first: the train job that started each, its settings (the
    engine's recipe for them), its newest attempt (status, node) and its best figures."""
    engine, runs = avatar.engine_plugin, {}
    for job in avatar.jobs.filter(kind=pipeline.TRAIN).select_related("node").order_by("id"):
        run = runs.setdefault(run_of(job), {"id": run_of(job), "started": job, "settings": {}})
        run["latest"] = job  # attempts in order: the last one says where the run stands
        try:
            run["settings"] = engine.recipe(job.params)
        except ValueError:
            run["settings"] = {"iterations": job.params.get("iterations")}  # from before today's rules
    current = newest_run(avatar).values_list("run_id", flat=True).first()
    for run in runs.values():
        scored = [e for e in evaluations if e.run_id == run["id"] and e.psnr is not None]
        run["best"] = max(scored, key=lambda e: e.psnr) if scored else None
        run["current"] = run["id"] == current
    return sorted(runs.values(), key=lambda run: run["id"], reverse=True)


@login_required
def avatar_detail(request, avatar_id: int):
    avatar = get_object_or_404(avatars_visible_to(request.user), pk=avatar_id)
    latest_train = avatar.jobs.filter(kind=pipeline.TRAIN).order_by("-created_at").first()
    preprocess = avatar.jobs.filter(kind=pipeline.PREPROCESS).order_by("-created_at").first()
    has_validation = avatar.jobs.filter(kind=pipeline.RENDER_VALIDATION, status="succeeded").exists()
    evaluations = list(avatar.evaluations.all())
    scored = [e for e in evaluations if e.psnr is not None]
    best = max(scored, key=lambda e: e.psnr) if scored else None
    per_frame = best.per_frame if best else {}
    pairs = zip(per_frame.get("psnr", []), per_frame.get("ssim", []), strict=True)
    frames = [{"frame": index, "psnr": psnr, "ssim": ssim} for index, (psnr, ssim) in enumerate(pairs)]
    context = {
        "avatar": avatar,
        "latest_train": latest_train,
        "preprocess": preprocess,
        "stages": _preprocessing_stages(avatar, preprocess),
        "pipeline": avatar_pipeline(avatar),
        "has_validation": has_validation,
        "series": (latest_train.result.get("series", []) if latest_train else []),
        "curve_axis": _curve_axis(avatar, latest_train),
        "has_validation_gt": _validation_file(avatar, "validation_gt.mov") != "",
        "jobs": avatar.jobs.select_related("node", "gpu")[:20],
        "datasets": avatar.datasets.select_related("node"),
        "checkpoints": avatar.checkpoints.select_related("node").order_by(
            F("run_id").desc(nulls_last=True), "-iteration"
        )[:50],
        "renderable": set(renderable(avatar.checkpoints.all()).values_list("pk", flat=True)),
        "runs": _training_runs(avatar, evaluations),
        "evaluations": evaluations,
        "best": best,
        "quality_chart": [{"iteration": e.iteration, "psnr": e.psnr, "ssim": e.ssim} for e in scored],
        "frame_chart": frames,
        "evaluated": {e.checkpoint_id for e in evaluations},
        "failed_step": avatar_failed_step(avatar),
        "active": avatar.jobs.filter(status__in=("queued", "running")).exists(),
        "nodes": Node.objects.filter(enabled=True),
    }
    return render(request, "avatars/avatar_detail.html", context)


@login_required
@require_POST
def avatar_retry_view(request, avatar_id: int):
    avatar = get_object_or_404(avatars_visible_to(request.user), pk=avatar_id)
    try:
        job = avatar_retry(avatar=avatar, owner=request.user)
    except ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Retrying: job #{job.pk} ({kind_label(job.kind)}).")
    return redirect("avatar-detail", avatar_id=avatar.pk)


@login_required
@require_POST
def avatar_cancel_view(request, avatar_id: int):
    avatar = get_object_or_404(avatars_visible_to(request.user), pk=avatar_id)
    try:
        stopped = avatar_cancel(avatar=avatar)
    except ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Canceled {len(stopped)} job(s); running engines are being stopped.")
    return redirect("avatar-detail", avatar_id=avatar.pk)


@login_required
@require_POST
def avatar_evaluate_view(request, avatar_id: int):
    avatar = get_object_or_404(avatars_visible_to(request.user), pk=avatar_id)
    checkpoint = get_object_or_404(avatar.checkpoints, pk=request.POST.get("checkpoint") or 0)
    try:
        job = avatar_evaluate(avatar=avatar, owner=request.user, checkpoint=checkpoint)
    except ServiceError as error:
        messages.error(request, str(error))
    else:
        messages.success(
            request, f"Rendering the validation split with iteration {checkpoint.iteration}: job #{job.pk}."
        )
    return redirect("avatar-detail", avatar_id=avatar.pk)


@login_required
@require_POST
def avatar_train_view(request, avatar_id: int):
    avatar = get_object_or_404(avatars_visible_to(request.user), pk=avatar_id)
    node = Node.objects.filter(enabled=True, name=request.POST.get("node", "")).first()
    try:
        job = avatar_train(
            avatar=avatar, owner=request.user, node=node, iterations=request.POST.get("iterations") or None,
            seconds=request.POST.get("seconds") or None,
        )  # fmt: skip
    except ServiceError as error:
        messages.error(request, str(error))
        return redirect("avatar-detail", avatar_id=avatar.pk)
    messages.success(request, f"Training started: job #{job.pk} ({kind_label(job.kind)}).")
    return redirect("avatar-detail", avatar_id=avatar.pk)


@login_required
@require_POST
def avatar_proceed_view(request, avatar_id: int):
    avatar = get_object_or_404(avatars_visible_to(request.user), pk=avatar_id)
    try:
        avatar_proceed_anyway(avatar=avatar)
        messages.warning(request, "Noted: this avatar will be trained although its video failed checks.")
    except ServiceError as error:
        messages.error(request, str(error))
    return redirect("avatar-detail", avatar_id=avatar.pk)


@login_required
@require_POST
def avatar_delete_view(request, avatar_id: int):
    avatar = get_object_or_404(avatars_visible_to(request.user), pk=avatar_id)
    if ask := delete_confirmation(
        request, title=f"Delete the avatar {avatar.name}?",
        cancel_url=reverse("avatar-detail", args=[avatar.pk]),
        consequences="Its video, its datasets and models on the GPU nodes, and its videos and conversations "
        "are deleted. Its jobs stay in the history.",
    ):  # fmt: skip
        return ask
    try:
        avatar_delete(avatar=avatar)
    except ServiceError as error:
        messages.error(request, str(error))
        return redirect("avatar-detail", avatar_id=avatar.pk)
    messages.success(request, f"Avatar {avatar.name} and its files were deleted.")
    return redirect("avatar-list")


MEDIA_FILES = {"video": "video", "au_csv": "au_csv"}


@login_or_token_required
def avatar_media(request, avatar_id: int, what: str):
    """An avatar's files, to its owner only (people's faces and voices are never public URLs).

    In production the proxy sends the bytes (X-Accel-Redirect to an internal location)."""
    avatar = get_object_or_404(avatars_visible_to(request.user), pk=avatar_id)
    if what == "validation":
        # GaussianTalker's render.py writes .mov, SyncTalk's main.py --test .mp4 (each engine's collect)
        relative = _validation_file(avatar, "validation.mov") or _validation_file(avatar, "validation.mp4")
    elif what == "validation_gt":  # the same frames from your video, for side by side
        relative = _validation_file(avatar, "validation_gt.mov")
    else:
        relative = getattr(avatar, MEDIA_FILES[what], "") if what in MEDIA_FILES else ""
    return private_file(request, relative, attachment=what != "video")
