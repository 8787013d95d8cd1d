"""Figures a person can read: a training's stages on the chart's iteration axis, the validation render
beside the real frames (GaussianTalker render.py's gt video, collected with the render), stills on the
avatar page's videos."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from avatars.engines.gaussiantalker.parsers import render_gt_path, render_output_path
from avatars.engines.registry import engine_for
from avatars.job_kinds import render_validation_plan
from avatars.models import Avatar, Checkpoint
from gpu_nodes.connections import LocalConnection
from gpu_nodes.models import Node
from jobs.models import Job
from tests.avatars.test_engine_plans import make_job

pytestmark = pytest.mark.django_db


def test_the_ground_truth_video_lies_beside_the_render_as_render_py_names_it():
    # render.py:50 gts_path = <model>/<set>/ours_<iter>/gt; :137 names it <P>_<set>_<iter>iter_gt.mov
    assert render_output_path("/w/output/ada/run-3", "test", 1000) == (
        "/w/output/ada/run-3/test/ours_1000/renders/ada_test_1000iter_renders.mov"
    )
    assert render_gt_path("/w/output/ada/run-3", "test", 1000) == (
        "/w/output/ada/run-3/test/ours_1000/gt/ada_test_1000iter_gt.mov"
    )
    with pytest.raises(ValueError, match="no ground-truth video for custom audio"):
        render_gt_path("/w/output/ada/run-3", "custom", 1000)


@pytest.mark.parametrize("engine", ["gaussiantalker", "demo"])
def test_a_validation_render_collects_the_real_frames_too_and_needs_them(alice, tmp_path, engine):
    job = make_job(alice, tmp_path, engine=engine, kind="render_validation")
    job.params = {**job.params, "iteration": 500}
    plan = render_validation_plan(job)
    (render, render_name), (real, real_name) = plan.collect
    assert (render_name, real_name) == ("validation.mov", "validation_gt.mov")
    assert Path(real).parent.parent == Path(render).parent.parent  # ours_500/{renders,gt}
    conn = LocalConnection(Node.objects.get(pk=job.node_id))
    Path(render).parent.mkdir(parents=True)
    Path(render).write_bytes(b"render")
    assert "no ground-truth video" in plan.verify(conn)
    Path(real).parent.mkdir(parents=True)
    Path(real).write_bytes(b"real")
    assert plan.verify(conn) is None


@pytest.mark.parametrize("engine", ["gaussiantalker", "synctalk", "demo"])
def test_training_phases_span_the_progress_the_parser_counts(engine):
    plugin = engine_for(engine)
    phases = plugin.training_phases({"iterations": 1000 if engine != "demo" else 60})
    assert len(phases) == 2 and all(p.iterations > 0 and p.note for p in phases)
    recipe = plugin.recipe({"iterations": 1000 if engine != "demo" else 60})
    total = sum(p.iterations for p in phases)
    if engine == "synctalk":  # --iters is cumulative: the lips stage ends at the whole count
        assert (phases[0].stage, phases[1].stage) == ("head", "lips") and total == recipe["lips_iters"]
    else:  # train.py: coarse_iterations, then iterations, counted end to end by TrainParser
        assert (phases[0].stage, phases[1].stage) == ("coarse", "fine")
        assert (phases[0].iterations, phases[1].iterations) == (
            recipe["coarse_iterations"],
            recipe["iterations"],
        )


def test_the_avatar_page_gives_the_chart_its_iteration_axis_and_the_videos_beside_each_other(
    client, alice, bob, tmp_path, settings
):
    settings.MEDIA_ROOT = str(tmp_path)
    avatar = Avatar.objects.create(
        owner=alice, name="Ada", slug="ada", engine="demo", status="trained", video="avatars/ada/v.mp4",
        consent_given_at=timezone.now(), consent_given_by=alice, consent_statement="mine",
    )  # fmt: skip
    node = Node.objects.create(name="n1", workdir="/w", status="online")
    Checkpoint.objects.create(avatar=avatar, node=node, stage="fine", iteration=60, path="/p")
    Job.objects.create(
        owner=alice, kind="train", avatar=avatar, status="succeeded",
        params={"avatar": avatar.pk, "iterations": 60},
        result={"series": [{"progress": 0.5, "loss": 0.1, "psnr": 20.0, "stage": "coarse"}]},
    )  # fmt: skip
    for name, body in (("validation.mov", b"render"), ("validation_gt.mov", b"real")):
        (tmp_path / "jobs" / "9").mkdir(parents=True, exist_ok=True)
        (tmp_path / "jobs" / "9" / name).write_bytes(body)
    Job.objects.create(
        owner=alice, kind="render_validation", avatar=avatar, status="succeeded", finished_at=timezone.now(),
        params={"avatar": avatar.pk},
        result={"files": {"validation.mov": "jobs/9/validation.mov",
                          "validation_gt.mov": "jobs/9/validation_gt.mov"}},
    )  # fmt: skip
    client.force_login(alice)
    page = client.get(reverse("avatar-detail", args=[avatar.pk])).content.decode()
    axis = json.loads(re.search(r'<script id="curve-axis" type="application/json">(.*?)</script>', page)[1])
    assert axis["total"] == 90 and [p["stage"] for p in axis["phases"]] == ["coarse", "fine"]
    assert "where fine takes over" in page
    assert 'id="play-pair"' in page and len(re.findall(r"<video[^>]* data-pair>", page)) == 2
    media = reverse("avatar-media", args=[avatar.pk, "validation_gt"])
    assert f'src="{media}#t=0.5"' in page
    real = client.get(media)
    assert (
        real.status_code == 200
        and b"".join(real.streaming_content if real.streaming else [real.content]) == b"real"
    )
    client.force_login(bob)
    assert client.get(media).status_code == 404


def test_a_synctalk_validation_render_is_served_too(client, alice, tmp_path, settings):
    """SyncTalk's validation render is collected as validation.mp4 (main.py --test writes MP4)."""
    settings.MEDIA_ROOT = str(tmp_path)
    avatar = Avatar.objects.create(
        owner=alice, name="Sy", slug="sy", engine="synctalk", status="trained", video="avatars/sy/v.mp4",
        consent_given_at=timezone.now(), consent_given_by=alice, consent_statement="mine",
    )  # fmt: skip
    (tmp_path / "jobs" / "4").mkdir(parents=True)
    (tmp_path / "jobs" / "4" / "validation.mp4").write_bytes(b"mp4")
    Job.objects.create(
        owner=alice, kind="render_validation", avatar=avatar, status="succeeded", finished_at=timezone.now(),
        params={"avatar": avatar.pk}, result={"files": {"validation.mp4": "jobs/4/validation.mp4"}},
    )  # fmt: skip
    client.force_login(alice)
    served = client.get(reverse("avatar-media", args=[avatar.pk, "validation"]))
    assert served.status_code == 200
    assert b"".join(served.streaming_content if served.streaming else [served.content]) == b"mp4"
    assert client.get(reverse("avatar-media", args=[avatar.pk, "validation_gt"])).status_code == 404
