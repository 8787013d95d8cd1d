"""What the pipeline runs for the real engines (which cannot run here: no GPU, no weights): the command
lines, the runtime wrapping, the derived GaussianTalker config, the training recipes (GaussianTalker's
coarse and fine stages, SyncTalk's head then lips), each run's own model folder and the checkpoint
listings, executed against real folders through the real local connection."""

from __future__ import annotations

from pathlib import Path

import pytest

from avatars.engines.gaussiantalker import commands as gaussiantalker_commands
from avatars.engines.registry import engine_for
from avatars.job_kinds import evaluate_plan, preprocess_plan, render_validation_plan, train_plan
from avatars.models import Avatar, Checkpoint, DatasetCopy
from avatars.pipeline import after_train, avatar_retry, avatar_train
from avatars.runs import default_checkpoint
from core.errors import ServiceError
from gpu_nodes.connections import LocalConnection
from gpu_nodes.models import Gpu, Node
from gpu_nodes.runtime import DOCKER_AS_NODE_USER
from jobs.models import Job
from jobs.streams import LineSplitter


def console_lines(data: bytes, chunk: int = 89) -> list[str]:
    """Lines as the runner sees them: the byte stream in pieces through the LineSplitter."""
    splitter, lines = LineSplitter(), []
    for start in range(0, len(data), chunk):
        lines.extend(splitter.feed(data[start : start + chunk]))
    return lines + splitter.close()


def make_job(alice, tmp_path, *, engine: str, kind: str, runtime: str = "bare", params=None) -> Job:
    node = Node.objects.create(
        name=f"n-{engine}-{runtime}", workdir=str(tmp_path / "work"), runtime=runtime,
        docker_image="gaussiantalker:latest" if runtime == "docker" else "", status="online",
    )  # fmt: skip
    gpu = Gpu.objects.create(node=node, index=1, name="NVIDIA H100")
    avatar = Avatar.objects.create(
        owner=alice, name=f"A {engine}", slug=f"anna-{engine[:4]}", engine=engine, status="training",
        video="avatars/x/x.mp4", consent_given_at="2026-01-01T00:00Z", consent_given_by=alice,
        consent_statement="yes",
    )  # fmt: skip
    return Job.objects.create(
        owner=alice,
        kind=kind,
        node=node,
        gpu=gpu,
        avatar=avatar,
        params={"avatar": avatar.pk, **(params or {})},
    )


def test_gaussiantalker_preprocessing_in_docker_runs_process_py_then_estimates_blinks(alice, tmp_path):
    job = make_job(alice, tmp_path, engine="gaussiantalker", kind="preprocess", runtime="docker")
    plan = preprocess_plan(job)
    argv = plan.invocation.argv
    assert argv[:5] == ["sh", "-c", DOCKER_AS_NODE_USER, "docker-run", "--rm"]  # as the node's user
    assert argv[argv.index("--gpus") :][:2] == ["--gpus", "device=1"]
    assert argv[argv.index("-w") + 1] == "/GaussianTalker"
    assert "gaussiantalker:latest" in argv and "PYTHONUNBUFFERED=1" in argv
    work = tmp_path / "work"
    shell = argv[-1]
    assert argv[-3:-1] == ["sh", "-c"]
    assert (
        f"python -u data_utils/process.py {work}/data/anna-gaus/anna-gaus.mp4 --task -1 --asr deepspeech"
        in shell
    )
    assert f"&& python3 -u {work}/engines/node/blinks.py {work}/data/anna-gaus" in shell
    uploaded = {remote for _, remote in plan.uploads}
    assert f"{work}/engines/node/blinks.py" in uploaded and f"{work}/data/anna-gaus/anna-gaus.mp4" in uploaded


def test_synctalk_preprocessing_needs_no_blinks_and_checks_its_own_artifacts(alice, tmp_path):
    job = make_job(alice, tmp_path, engine="synctalk", kind="preprocess")
    plan = preprocess_plan(job)
    assert plan.invocation.argv[:4] == [
        "python",
        "-u",
        "data_utils/process.py",
        f"{tmp_path}/work/data/anna-sync/anna-sync.mp4",
    ]
    assert plan.invocation.env["COLUMNS"] == "1000" and plan.invocation.env["CUDA_VISIBLE_DEVICES"] == "1"
    assert plan.invocation.cwd == f"{tmp_path}/work/engines/synctalk"
    data = tmp_path / "work" / "data" / "anna-sync"
    data.mkdir(parents=True)
    problem = plan.verify(LocalConnection(job.node))
    assert problem and "Preprocessing ended without producing" in problem and "au.csv" not in problem


def test_gaussiantalker_training_with_other_iterations_uses_a_derived_config(alice, tmp_path):
    job = make_job(alice, tmp_path, engine="gaussiantalker", kind="train", params={"iterations": 4000})
    engine = tmp_path / "work" / "engines" / "gaussiantalker" / "arguments"
    engine.mkdir(parents=True)
    (engine / "64_dim_1_transformer.py").write_text(
        "OptimizationParams = dict(\n    coarse_iterations = 7999,\n    iterations = 10000,\n"
        "    batch_size=32,\n)\n"
    )
    DatasetCopy.objects.create(avatar=job.avatar, node=job.node, path="/data", complete=True)  # data here
    plan = train_plan(job)
    argv = plan.invocation.argv
    run = f"{tmp_path}/work/output/anna-gaus/run-{job.pk}"  # the run's own model folder
    assert argv[argv.index("--model_path") + 1] == run
    config = argv[argv.index("--configs") + 1]
    assert config == f"{run}/talkforge-config.py"
    assert argv[argv.index("--port") + 1] == "6011"  # GPU1: its own viewer port
    plan.prepare(LocalConnection(job.node))
    written = Path(config).read_text()
    # A fine stage of 4000 gets a coarse stage scaled like the config's 7999 of 10000, not one idling from
    # 4000 to 7999 (train.py:252 steps the optimizer only below --iterations).
    assert "iterations = 4000," in written and "coarse_iterations = 3199," in written
    assert (plan.parser.coarse_total, plan.parser.fine_total) == (3199, 4000)


def test_gaussiantalker_checkpoints_are_listed_with_their_sizes(alice, tmp_path):
    job = make_job(alice, tmp_path, engine="gaussiantalker", kind="train")
    plan = train_plan(job)
    model = Path(plan.outputs["model_path"])
    for folder, size in (("coarse_iteration_1", 10), ("iteration_500", 2000), ("iteration_10000", 3000)):
        (model / "point_cloud" / folder).mkdir(parents=True)
        (model / "point_cloud" / folder / "point_cloud.ply").write_bytes(b"x" * size)
    (model / "cfg_args").write_text("Namespace()")
    conn = LocalConnection(job.node)
    assert plan.verify(conn) is None
    found = {(stage, iteration): size for stage, iteration, _, size in plan.finish(conn)["checkpoints"]}
    assert set(found) == {("coarse", 1), ("fine", 500), ("fine", 10000)}
    assert found[("fine", 10000)] >= 3000


def test_synctalk_training_runs_head_then_lips_in_its_run_workspace_and_lists_epoch_checkpoints(
    alice, tmp_path
):
    job = make_job(alice, tmp_path, engine="synctalk", kind="train", params={"iterations": 60000})
    plan = train_plan(job)
    argv = plan.invocation.argv
    workspace = f"{tmp_path}/work/model/anna-sync/run-{job.pk}"
    data = f"{tmp_path}/work/data/anna-sync"
    # Both of upstream's stages (README.md:161–162), one after the other in the same workspace; --iters is
    # cumulative: the head to 60% of the total, the lips to all of it.
    assert argv[:2] == ["sh", "-c"]
    assert argv[2] == (
        "echo '[talkforge] step 1/2: head' && "
        f"python -u main.py {data} --workspace {workspace} -O --iters 36000 --asr_model ave && "
        "echo '[talkforge] step 2/2: lips' && "
        f"python -u main.py {data} --workspace {workspace} -O --iters 60000 --finetune_lips --patch_size 64 "
        "--asr_model ave"
    )
    assert "--ckpt" not in argv[2] and "--portrait" not in argv[2]  # resumes the latest; trains the head
    checkpoints = Path(workspace) / "checkpoints"
    checkpoints.mkdir(parents=True)
    for epoch in (11, 12):
        (checkpoints / f"ngp_ep{epoch:04d}.pth").write_bytes(b"x" * 100)
    listed = plan.finish(LocalConnection(job.node))["checkpoints"]
    assert sorted((stage, epoch) for stage, epoch, _, _ in listed) == [("epoch", 11), ("epoch", 12)]


@pytest.fixture(autouse=True)
def _db(db):
    return db


def test_gaussiantalker_evaluation_runs_our_script_in_the_engine_container_next_to_the_data(alice, tmp_path):
    job = make_job(
        alice,
        tmp_path,
        engine="gaussiantalker",
        kind="evaluate",
        runtime="docker",
        params={"iteration": 10000},
    )
    plan = evaluate_plan(job)
    argv, work = plan.invocation.argv, tmp_path / "work"
    assert (
        argv[:5] == ["sh", "-c", DOCKER_AS_NODE_USER, "docker-run", "--rm"]
        and f"{work}:{work}" in argv
        and "gaussiantalker:latest" in argv
    )
    shell = argv[-1]
    video = f"{work}/output/anna-gaus/test/ours_10000/renders/output_test_10000iter_renders.mov"
    assert f"python3 -u {work}/engines/node/evaluate.py --video {video} --data {work}/data/anna-gaus" in shell
    assert f"--output-json {work}/jobs/{job.pk}/evaluation.json" in shell
    assert {remote for _, remote in plan.uploads} == {f"{work}/engines/node/evaluate.py"}
    assert plan.verify(LocalConnection(job.node)).startswith("The evaluation wrote no report")


def test_synctalk_evaluation_scores_the_val_video_its_training_rendered(alice, tmp_path):
    job = make_job(alice, tmp_path, engine="synctalk", kind="evaluate", params={"iteration": 12})
    plan = evaluate_plan(job)
    assert plan.outputs["video"] == f"{tmp_path}/work/model/anna-sync/results/ngp_ep0012.mp4"
    assert plan.invocation.env["CUDA_VISIBLE_DEVICES"] == "1"


def test_evaluation_parser_reads_the_bar_and_the_error():
    from avatars.engines.console import EvaluateParser

    parser = EvaluateParser()
    assert parser.feed("[INFO] ===== evaluate 680 frames =====").stage == "evaluate"
    update = parser.feed(
        "Evaluating:  44%|####4     | 300/680 [00:03<00:04, 95.00it/s, psnr=31.20, ssim=0.9100]"
    )
    assert update.progress == pytest.approx(300 / 680) and update.metrics == {"psnr": 31.2, "ssim": 0.91}
    assert update.eta_seconds == 4
    parser.feed("[ERROR] The ground-truth frame gt_imgs/7.jpg is missing: preprocess the avatar again.")
    assert (
        parser.outcome(2) == "The ground-truth frame gt_imgs/7.jpg is missing: preprocess the avatar again."
    )
    assert parser.outcome(0) is None


def test_the_demo_render_dies_like_render_py_on_an_iteration_never_saved(tmp_path):
    import subprocess
    import sys

    from avatars.engines.base import ENGINES_DIR as ENGINES

    model = tmp_path / "output" / "anna"
    (model / "point_cloud" / "iteration_10").mkdir(parents=True)
    (model / "cfg_args").write_text("Namespace()")
    run = subprocess.run(
        [sys.executable, str(ENGINES / "demo" / "node" / "render.py"), "-s", str(tmp_path),
         "--model_path", str(model), "--iteration", "20", "--batch", "8", "--skip_train"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 1
    assert f"No such file or directory: '{model}/point_cloud/iteration_20/point_cloud.ply'" in run.stderr


# --- GaussianTalker's iterations (issue 10, defect 6) -----------------------------------------------------


@pytest.mark.parametrize(
    ("iterations", "choose"),
    [(4250, "such as 4000 or 4500"), (300, "such as 500"), (10001, "10000 or 10500")],
)
def test_gaussiantalker_refuses_a_count_whose_tail_it_would_never_save(alice, tmp_path, iterations, choose):
    job = make_job(alice, tmp_path, engine="gaussiantalker", kind="train")
    Avatar.objects.filter(pk=job.avatar.pk).update(status="ready_to_train")
    job.delete()
    avatar = Avatar.objects.get(slug="anna-gaus")
    with pytest.raises(ServiceError) as refused:
        avatar_train(avatar=avatar, owner=alice, iterations=iterations)
    message = str(refused.value)
    assert "every 500 (train.py:214)" in message and choose in message, message
    assert not Job.objects.filter(avatar=avatar).exists()
    assert Avatar.objects.get(pk=avatar.pk).status == "ready_to_train"


def test_gaussiantalker_recipe_keeps_the_coarse_stage_inside_the_fine_one():
    recipe = gaussiantalker_commands.recipe
    assert recipe(None) == {"coarse_iterations": 7999, "iterations": 10000}  # the shipped config
    assert recipe(10000) == recipe(None) and recipe(30000)["coarse_iterations"] == 7999
    for iterations in (500, 1000, 4000, 7500, 8000):
        coarse = recipe(iterations)["coarse_iterations"]
        assert 0 < coarse < iterations  # train.py:252 steps the optimizer only below --iterations


def test_gaussiantalker_renders_name_their_iteration_never_minus_one(alice, tmp_path):
    job = make_job(alice, tmp_path, engine="gaussiantalker", kind="render_validation")
    train = Job.objects.create(
        owner=alice, kind="train", node=job.node, avatar=job.avatar, status="succeeded"
    )
    for stage, iteration in (("coarse", 7999), ("fine", 1), ("fine", 500), ("fine", 4000)):
        Checkpoint.objects.create(
            avatar=job.avatar,
            node=job.node,
            run=train,
            stage=stage,
            iteration=iteration,
            path=f"/p/{iteration}",
        )
    # A job that names nothing (from before every step named it) renders the newest run's last fine save.
    argv = render_validation_plan(job).invocation.argv
    run = f"{tmp_path}/work/output/anna-gaus/run-{train.pk}"
    assert argv[argv.index("--model_path") + 1] == run and argv[argv.index("--iteration") + 1] == "4000"
    job.params = {**job.params, "iteration": 500, "run": train.pk}
    plan = render_validation_plan(job)
    assert plan.invocation.argv[plan.invocation.argv.index("--iteration") + 1] == "500"
    assert plan.outputs["video"] == f"{run}/test/ours_500/renders/anna-gaus_test_500iter_renders.mov"
    with pytest.raises(ValueError, match="coarse stage included"):
        gaussiantalker_commands.validation_render(
            data_root="data", output_root="output", name="x", iteration=-1
        )


# --- SyncTalk's recipe (issue 10, defect 4) -----------------------------------------------------------


def test_synctalk_default_recipe_is_upstreams_two_stages():
    assert engine_for("synctalk").recipe({})["head_iters"] == 60000  # README.md:161
    assert engine_for("synctalk").recipe({})["lips_iters"] == 100000  # README.md:162


def test_synctalk_training_follows_both_stages_in_one_progress_bar(alice, tmp_path):
    # 600 then 1000 iterations, the fixtures' runs (README's 60000 then 100000, at the fixtures' scale)
    job = make_job(alice, tmp_path, engine="synctalk", kind="train", params={"iterations": 1000})
    parser = train_plan(job).parser
    fixtures = Path(__file__).resolve().parent.parent / "fixtures"
    head = console_lines((fixtures / "synctalk_train.txt").read_bytes())
    lips = console_lines((fixtures / "synctalk_train_finetune.txt").read_bytes())
    progress, stages = [], set()
    for line in ["[talkforge] step 1/2: head", *head, "[talkforge] step 2/2: lips", *lips]:
        update = parser.feed(line)
        if update is not None and update.progress is not None:
            progress.append(update.progress)
        if update is not None and update.stage:
            stages.add(update.stage)
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert pytest.approx(0.6) in progress  # the head's end: 600 of 1000 cumulative iterations
    assert {"head: train", "lips: train", "lips: complete"} <= stages
    assert parser.outcome(0) is None

    only_head = train_plan(job).parser
    for line in ["[talkforge] step 1/2: head", *head]:
        only_head.feed(line)
    assert "before lips started" in only_head.outcome(0)
    cut = train_plan(job).parser
    for line in ["[talkforge] step 1/2: head", *head, "[talkforge] step 2/2: lips", *lips[:40]]:
        cut.feed(line)
    assert cut.outcome(0).startswith("lips: main.py ended before its final test")


def test_synctalk_validation_render_pastes_the_face_back_with_the_chosen_checkpoint(alice, tmp_path):
    job = make_job(alice, tmp_path, engine="synctalk", kind="render_validation")
    train = Job.objects.create(
        owner=alice, kind="train", node=job.node, avatar=job.avatar, status="succeeded"
    )
    job.params = {**job.params, "iteration": 17, "run": train.pk}
    plan = render_validation_plan(job)
    argv, workspace = plan.invocation.argv, f"{tmp_path}/work/model/anna-sync/run-{train.pk}"
    # README.md:125: --portrait gives upstream's headline figures (PSNR 37.6 against 32.2 without).
    assert argv == [
        "python", "-u", "main.py", f"{tmp_path}/work/data/anna-sync", "--workspace", workspace, "-O",
        "--test", "--asr_model", "ave", "--portrait", "--ckpt", f"{workspace}/checkpoints/ngp_ep0017.pth",
    ]  # fmt: skip
    assert plan.collect == ((f"{workspace}/results/ngp_ep0017.mp4", "validation.mp4"),)
    assert plan.parser.evaluate  # main.py --test scores the val split too: its PSNR/LPIPS/LMD are shown
    evaluation = evaluate_plan(Job.objects.create(
        owner=alice, kind="evaluate", node=job.node, avatar=job.avatar, params=job.params
    ))  # fmt: skip
    assert evaluation.outputs["video"] == f"{workspace}/results/ngp_ep0017.mp4"  # the portrait render


def test_synctalk_training_is_followed_by_its_validation_render(alice, tmp_path):
    job = make_job(alice, tmp_path, engine="synctalk", kind="train")
    workspace = f"{tmp_path}/work/model/anna-sync/run-{job.pk}"
    Job.objects.filter(pk=job.pk).update(status="succeeded", result={"checkpoints": [
        ("epoch", epoch, f"{workspace}/checkpoints/ngp_ep{epoch:04d}.pth", 10) for epoch in (16, 17)
    ]})  # fmt: skip
    job.refresh_from_db()
    after_train(job)
    follow = Job.objects.get(parent=job)
    assert follow.kind == "render_validation" and follow.params["iteration"] == 17
    assert follow.params["run"] == job.pk


# --- each training run in its own folder (issue 10, defect 9) ------------------------------------------


def test_a_shorter_retraining_renders_its_own_model_not_the_previous_one(alice, tmp_path):
    first = make_job(alice, tmp_path, engine="gaussiantalker", kind="train")
    avatar, node = first.avatar, first.node
    model = Path(train_plan(first).outputs["model_path"])
    assert model == tmp_path / "work" / "output" / "anna-gaus" / f"run-{first.pk}"

    def trained(job, iterations):
        folder = Path(train_plan(job).outputs["model_path"])
        for iteration in iterations:
            (folder / "point_cloud" / f"iteration_{iteration}").mkdir(parents=True)
        (folder / "cfg_args").write_text("Namespace()")
        plan = train_plan(job)
        conn = LocalConnection(node)
        assert plan.verify(conn) is None
        Job.objects.filter(pk=job.pk).update(status="succeeded", result=plan.finish(conn))
        job.refresh_from_db()
        after_train(job)
        return Job.objects.get(parent=job, kind="render_validation")

    render = trained(first, (1, 500, 1000, 10000))
    assert (render.params["iteration"], render.params["run"]) == (10000, first.pk)
    Avatar.objects.filter(pk=avatar.pk).update(status="trained")
    Job.objects.filter(pk=render.pk).update(status="succeeded")

    second = Job.objects.create(owner=alice, kind="train", node=node, gpu=first.gpu, avatar=avatar,
                                params={"avatar": avatar.pk, "iterations": 1000})  # fmt: skip
    render = trained(second, (1, 500, 1000))
    # The new run renders its own final save, from its own folder; the old run's 10000 is not "newer".
    assert (render.params["iteration"], render.params["run"]) == (1000, second.pk)
    render.node = node  # as placement will: the run's node (job_submit pins it)
    argv = render_validation_plan(render).invocation.argv
    assert argv[argv.index("--model_path") + 1] == f"{tmp_path}/work/output/anna-gaus/run-{second.pk}"
    assert argv[argv.index("--iteration") + 1] == "1000"
    assert default_checkpoint(avatar).iteration == 1000 and default_checkpoint(avatar).run_id == second.pk
    # The first run's checkpoints stay, marked as of their run, with their own paths.
    kept = Checkpoint.objects.get(avatar=avatar, run=first, iteration=10000)
    assert kept.path == f"{model}/point_cloud/iteration_10000"
    assert set(Checkpoint.objects.filter(run=second).values_list("iteration", flat=True)) == {1, 500, 1000}


def test_a_retried_training_continues_its_run(alice, tmp_path):
    job = make_job(alice, tmp_path, engine="synctalk", kind="train")
    Job.objects.filter(pk=job.pk).update(status="failed", error="killed")
    Avatar.objects.filter(pk=job.avatar.pk).update(status="failed")
    retry = avatar_retry(avatar=job.avatar, owner=alice)
    assert retry.kind == "train" and retry.params["run"] == job.pk
    retry.node = job.node  # as placement will
    argv = train_plan(retry).invocation.argv[2]
    assert f"--workspace {tmp_path}/work/model/anna-sync/run-{job.pk} " in argv  # resumes its checkpoints
