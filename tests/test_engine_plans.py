"""What the pipeline runs for the real engines (which cannot run here: no GPU, no weights): the command
lines, the runtime wrapping, the derived GaussianTalker config and the checkpoint listings, executed
against real folders through the real local connection."""

from __future__ import annotations

from pathlib import Path

import pytest

from avatars.job_kinds import evaluate_plan, preprocess_plan, train_plan
from avatars.models import Avatar, DatasetCopy
from gpu_nodes.connections import LocalConnection
from gpu_nodes.models import Gpu, Node
from gpu_nodes.runtime import DOCKER_AS_NODE_USER
from jobs.models import Job


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
    assert f"&& python3 -u {work}/engines/blinks.py {work}/data/anna-gaus" in shell
    uploaded = {remote for _, remote in plan.uploads}
    assert f"{work}/engines/blinks.py" in uploaded and f"{work}/data/anna-gaus/anna-gaus.mp4" in uploaded


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
    config = argv[argv.index("--configs") + 1]
    assert config == f"{tmp_path}/work/output/anna-gaus-config.py"
    assert argv[argv.index("--port") + 1] == "6011"  # GPU1: its own viewer port
    plan.prepare(LocalConnection(job.node))
    written = Path(config).read_text()
    assert "iterations = 4000," in written and "coarse_iterations = 7999," in written
    assert plan.parser.fine_total == 4000


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


def test_synctalk_training_resumes_its_workspace_and_lists_epoch_checkpoints(alice, tmp_path):
    job = make_job(alice, tmp_path, engine="synctalk", kind="train", params={"iterations": 60000})
    plan = train_plan(job)
    argv = plan.invocation.argv
    workspace = f"{tmp_path}/work/model/anna-sync"
    assert argv[:4] == ["python", "-u", "main.py", f"{tmp_path}/work/data/anna-sync"]
    assert argv[argv.index("--workspace") + 1] == workspace and "--ckpt" not in argv  # default: latest
    assert argv[argv.index("--iters") + 1] == "60000"
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
    assert f"python3 -u {work}/engines/evaluate.py --video {video} --data {work}/data/anna-gaus" in shell
    assert f"--output-json {work}/jobs/{job.pk}/evaluation.json" in shell
    assert {remote for _, remote in plan.uploads} == {f"{work}/engines/evaluate.py"}
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

    from avatars.job_kinds import ENGINES

    model = tmp_path / "output" / "anna"
    (model / "point_cloud" / "iteration_10").mkdir(parents=True)
    (model / "cfg_args").write_text("Namespace()")
    run = subprocess.run(
        [sys.executable, str(ENGINES / "demo" / "render.py"), "-s", str(tmp_path), "--model_path", str(model),
         "--iteration", "20", "--batch", "8", "--skip_train"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 1
    assert f"No such file or directory: '{model}/point_cloud/iteration_20/point_cloud.ply'" in run.stderr
