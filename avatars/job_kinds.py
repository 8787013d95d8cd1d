"""The avatar pipeline's job kinds: what preprocessing and training run on a node, and what follows.

Kept beside the avatars (jobs/kinds.py registers them) so the job machinery knows nothing of engines."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path, PurePosixPath

from django.conf import settings

from gpu_nodes.connections import NodeConnection
from gpu_nodes.models import Node
from gpu_nodes.runtime import wrap
from jobs.kinds import Plan
from jobs.models import Job

from . import pipeline
from .engines import gaussiantalker
from .models import Avatar

ENGINES = Path(__file__).resolve().parent / "engines"
PREPROCESS_TASKS = range(1, 10)
CONTAINER_ROOT = {Avatar.Engine.GAUSSIANTALKER: "/GaussianTalker", Avatar.Engine.SYNCTALK: "/SyncTalk"}


def _python_and_scripts(job: Job, *names: str) -> tuple[str, list[str], tuple[tuple[Path, str], ...]]:
    """The interpreter and the node paths of our standard-library scripts (engines/<name>), with the uploads
    that put them there. On this machine they run in place."""
    if job.node.kind == Node.Kind.LOCAL and job.node.runtime == Node.Runtime.BARE:
        return sys.executable, [str(ENGINES / name) for name in names], ()
    remote = [str(PurePosixPath(job.node.workdir) / "engines" / name) for name in names]
    return "python3", remote, tuple((ENGINES / name, path) for name, path in zip(names, remote, strict=True))


def _engine_cwd(job: Job, engine: str) -> str:
    if job.node.runtime == Node.Runtime.DOCKER:
        return CONTAINER_ROOT[engine]
    return str(PurePosixPath(job.node.workdir) / "engines" / engine)


# Prints each glob pattern (arguments after the folder) that matches nothing there. One command for all
# patterns, so checking a dataset costs one round trip to the node.
_UNMATCHED = """cd "$1" || exit 3
shift
for pattern do
  found=no
  for file in $pattern; do [ -e "$file" ] && found=yes; break; done
  [ "$found" = yes ] || printf '%s\\n' "$pattern"
done"""


def _missing(conn: NodeConnection, folder: PurePosixPath, patterns: list[str]) -> list[str]:
    result = conn.run(["sh", "-c", _UNMATCHED, "sh", str(folder), *patterns], timeout=120)
    if result.returncode == 3:
        return ["the dataset folder itself"]
    return result.output.split()


def preprocess_plan(job: Job) -> Plan:
    avatar = job.avatar
    data = pipeline.dataset_dir(avatar, job.node.workdir)
    video = data / f"{avatar.slug}.mp4"
    uploads = [(pipeline.local_video(avatar), str(video))]
    if avatar.au_csv:
        uploads.append((Path(settings.MEDIA_ROOT) / avatar.au_csv, str(data / "au.csv")))
    python, (process, blinks), scripts = _python_and_scripts(job, "demo/process.py", "blinks.py")
    if avatar.engine == Avatar.Engine.DEMO:
        preprocess, cwd = [python, "-u", process, str(video)], str(data)
    else:
        preprocess = ["python", "-u", "data_utils/process.py", str(video), "--asr", "deepspeech"]
        cwd = _engine_cwd(job, avatar.engine)
    # Without an uploaded au.csv, blinks are estimated next to the data from the landmarks (task 7).
    argv = preprocess if avatar.au_csv else pipeline.shell_and(preprocess, [python, "-u", blinks, str(data)])

    def verify(conn: NodeConnection) -> str | None:
        # process.py's exit code cannot be trusted (spec §0): every task's files must be there.
        expected = [name for task in PREPROCESS_TASKS for name in gaussiantalker.expected_artifacts(task)]
        missing = _missing(conn, data, [*expected, "au.csv"])
        if missing:
            produced = ", ".join(missing[:8])
            return f"Preprocessing ended without producing {produced}: the log shows which stage failed."
        return None

    return Plan(
        invocation=wrap(node=job.node, gpu=job.gpu, argv=argv, name=job.container_name,
                        mounts=[job.node.workdir], cwd=cwd),
        parser=gaussiantalker.PreprocessParser(),
        outputs={"dataset": str(data)},
        uploads=(*scripts, *uploads),
        verify=verify,
        finish=lambda conn: {"stages": {str(task): "done" for task in PREPROCESS_TASKS}},
    )  # fmt: skip


CHECKPOINT_DIR = re.compile(r"^(coarse_iteration|iteration)_(-?\d+)$")


def _list_checkpoints(conn: NodeConnection, model: PurePosixPath) -> dict:
    """GaussianTalker keeps point_cloud/{coarse_,}iteration_N/ (spec §1.5): each with its size on disk."""
    listing = conn.run(["sh", "-c", f"du -sb {shlex.quote(str(model / 'point_cloud'))}/*/"], timeout=120)
    checkpoints = []
    for line in listing.output.splitlines():
        size, _, path = line.partition("\t")
        match = CHECKPOINT_DIR.match(PurePosixPath(path.rstrip("/")).name)
        if match and size.isdigit():
            stage = "coarse" if match.group(1) == "coarse_iteration" else "fine"
            checkpoints.append((stage, int(match.group(2)), path.rstrip("/"), int(size)))
    return {"checkpoints": checkpoints}


def train_plan(job: Job) -> Plan:
    avatar, params = job.avatar, job.params
    data = pipeline.dataset_dir(avatar, job.node.workdir)
    model = pipeline.model_dir(avatar, job.node.workdir)
    port = str(6009 + (job.gpu.index + 1 if job.gpu else 0))  # parallel trainings need their own port
    if avatar.engine == Avatar.Engine.DEMO:
        python, (train,), scripts = _python_and_scripts(job, "demo/train.py")
        iterations = params.get("iterations", 1000)
        coarse = max(10, iterations // 2)
        argv = [python, "-u", train, "-s", str(data), "--model_path", str(model),
                "--iterations", str(iterations), "--coarse_iterations", str(coarse),
                "--seconds", str(params.get("seconds", 20)), "--save_every", str(max(1, iterations // 4)),
                "--port", port]  # fmt: skip
        parser, cwd = gaussiantalker.TrainParser(coarse_iterations=coarse, iterations=iterations), str(data)
    else:
        scripts = ()
        argv = ["python", "-u", "train.py", "-s", str(data), "--model_path", str(model),
                "--configs", "arguments/64_dim_1_transformer.py", "--port", port]  # fmt: skip
        parser, cwd = gaussiantalker.TrainParser(), _engine_cwd(job, avatar.engine)
    return Plan(
        invocation=wrap(node=job.node, gpu=job.gpu, argv=argv, name=job.container_name,
                        mounts=[job.node.workdir], cwd=cwd),
        parser=parser,
        outputs={"model_path": str(model)},
        uploads=scripts,
        verify=lambda conn: None if conn.exists(str(model / "cfg_args")) else "Training left no cfg_args.",
        finish=lambda conn: _list_checkpoints(conn, model),
    )  # fmt: skip


def after_preprocess(job: Job) -> None:
    pipeline.after_preprocess(job)


def after_train(job: Job) -> None:
    pipeline.after_train(job, [tuple(item) for item in job.result.get("checkpoints", [])])
