from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from core.errors import ServiceError

from .forms import DemoTrainForm
from .models import Job
from .selectors import job_subject, jobs_visible_to
from .services import job_cancel, job_submit_public
from .timeline import job_stage_since


@login_required
def job_list(request):
    jobs = jobs_visible_to(request.user)
    status = request.GET.get("status", "")
    if status in Job.Status.values:
        jobs = jobs.filter(status=status)
    page = Paginator(jobs, 25).get_page(request.GET.get("page"))
    return render(
        request, "jobs/job_list.html", {"page": page, "status": status, "statuses": Job.Status.choices}
    )


@login_required
def job_detail(request, job_id: int):
    job = get_object_or_404(jobs_visible_to(request.user), pk=job_id)
    context = {"job": job, "subject": job_subject(job), "stage_since": job_stage_since(job)}
    return render(request, "jobs/job_detail.html", context)


@login_required
def job_new(request):
    form = DemoTrainForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        params = {key: form.cleaned_data[key] for key in ("seconds", "iterations", "coarse_iterations")}
        try:
            job = job_submit_public(
                owner=request.user, kind=form.kind, params=params, node=form.cleaned_data["node"]
            )
        except ServiceError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Job #{job.pk} submitted.")
            return redirect("job-detail", job_id=job.pk)
    return render(request, "jobs/job_new.html", {"form": form})


@login_required
@require_POST
def job_cancel_view(request, job_id: int):
    job = get_object_or_404(jobs_visible_to(request.user), pk=job_id)
    try:
        job_cancel(job=job)
    except ServiceError as error:
        messages.error(request, str(error))
    return redirect("job-detail", job_id=job.pk)
