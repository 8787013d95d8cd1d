"""Node self-test: can this node run this engine? (``manage.py node_selftest NODE --engine NAME``, and the
"Self-test engines" action on the node's admin page.)

Each check is pass/fail with what to do about a failure. Here, over the node's connection: the node
answers, the runtime is there (the engine's image on a docker node; its folder and environment on a bare
one), free disk in the workdir. Then ``node/selftest.py`` runs inside that runtime, as the engine's jobs
run (``gpu_nodes.runtime.wrap``, in the engine's repository folder): the GPU seen from there
(``torch.cuda``), the engine's compiled extensions, every weight file upstream loads, ffmpeg. The
result is kept on the node's NodeEngine row and shown on the node's admin page and in the API.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import PurePosixPath

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from core.errors import ServiceError
from gpu_nodes.connect import connection_for
from gpu_nodes.connections import CommandNotFound, NodeConnection, NodeError
from gpu_nodes.models import Node, NodeEngine
from gpu_nodes.node_engines import node_engine
from gpu_nodes.runtime import wrap

from .base import ENGINES_DIR, Engine
from .registry import ENGINES

logger = logging.getLogger(__name__)

SCRIPT = "node/selftest.py"
MARK = "TALKFORGE-SELFTEST "  # node/selftest.py prints its result after this
TIMEOUT = 600  # seconds for the in-runtime part: a first `docker run` of a large image, torch's import


def check(name: str, ok: bool, detail: str, fix: str = "") -> dict:
    return {"name": name, "ok": bool(ok), "detail": detail, "fix": "" if ok else fix}


def _runtime_checks(conn: NodeConnection, node: Node, engine: Engine, install: NodeEngine) -> list[dict]:
    if node.runtime == Node.Runtime.DOCKER:
        try:
            result = conn.run(
                ["docker", "image", "inspect", "--format", "{{.Id}}", install.image], timeout=60
            )
        except CommandNotFound:
            return [
                check(
                    "runtime",
                    False,
                    f"docker is not installed on node {node.name}",
                    "Install Docker with the NVIDIA container toolkit, or use the bare runtime.",
                )
            ]
        if result.returncode != 0:
            return [
                check(
                    "runtime",
                    False,
                    f"docker has no image {install.image}: {result.output.strip()[:300]}",
                    f"Build it on the node: docker build -t {install.image} docker/engines/{engine.name} "
                    "(its README lists the weights it needs), or correct the engine's image.",
                )
            ]
        return [check("runtime", True, f"image {install.image} ({result.output.strip()[:19]})")]
    checks = []
    folder = install.repo_dir
    checks.append(
        check("install folder", True, folder)
        if conn.exists(folder)
        else check(
            "install folder",
            False,
            f"{folder} does not exist on the node",
            "Clone the engine there as its README says, or set the engine's install folder.",
        )
    )
    if install.env_bin:
        checks.append(
            check("environment", True, install.env_bin)
            if conn.exists(f"{install.env_bin}/python")
            else check(
                "environment",
                False,
                f"{install.env_bin}/python does not exist on the node",
                "Create the engine's environment (its README's conda lines) and give its bin folder.",
            )
        )
    return checks


def _disk_check(conn: NodeConnection, node: Node) -> dict:
    free = conn.free_bytes(node.workdir)
    need = settings.NODE_SELFTEST_MIN_FREE_GB * 2**30
    detail = f"{free / 2**30:.1f} GB free in {node.workdir}"
    if free >= need:
        return check("disk", True, detail)
    return check(
        "disk",
        False,
        detail,
        f"Free space in the workdir: at least {settings.NODE_SELFTEST_MIN_FREE_GB:g} GB "
        "(NODE_SELFTEST_MIN_FREE_GB); delete old avatars or move the workdir to a larger disk.",
    )


def _in_runtime_checks(conn: NodeConnection, node: Node, engine: Engine) -> list[dict]:
    """Run node/selftest.py where the engine's jobs run, and read its one line of result."""
    script = str(PurePosixPath(node.workdir) / "engines" / SCRIPT)
    conn.make_dirs(str(PurePosixPath(script).parent))
    conn.put(ENGINES_DIR / SCRIPT, script)
    wanted = {
        "extensions": list(engine.extensions),
        "weights": [{"path": w.path, "root": w.root, "source": w.source} for w in engine.weights],
    }
    gpu = node.gpus.filter(present=True).exclude(index=-1).order_by("index").first()
    invocation = wrap(
        node=node,
        gpu=gpu,
        argv=["python", script, json.dumps(wanted)],
        name=f"talkforge-selftest-{engine.name}-{uuid.uuid4().hex[:8]}",
        mounts=[node.workdir],
        cwd=engine.cwd_on(node),
        env=engine.env(),
        engine=engine.name,
    )
    result = conn.run(invocation.argv, cwd=invocation.cwd, env=invocation.env, timeout=TIMEOUT)
    for line in reversed(result.output.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    return [
        check(
            "python",
            False,
            f"the engine's python did not run (exit {result.returncode}): {result.output.strip()[-500:]}",
            "Check the engine's image or environment: `python` must start in it.",
        )
    ]


def selftest_run(*, node: Node, engine_name: str) -> NodeEngine:
    """Self-test ``engine_name`` on ``node`` now and keep the result on its NodeEngine row."""
    engine = ENGINES.get(engine_name)
    if engine is None or engine.stand_in:
        real = ", ".join(name for name, e in ENGINES.items() if not e.stand_in)
        raise ServiceError(f"{engine_name!r} is not an engine to self-test: choose one of {real}.")
    install = node_engine(node, engine.name)
    if install is None:
        raise ServiceError(
            f"Node {node.name} does not list {engine.label}: add it under the node's engines (admin or API) "
            "with its image (docker) or install folder (bare), then self-test."
        )
    if not node.reachable_here:
        raise ServiceError(
            f"Node {node.name} is a local node of {node.host}: run manage.py node_selftest there."
        )
    try:
        conn = connection_for(node)
        try:
            checks = [check("reachable", True, f"{node.kind} node {node.name}")]
            checks += _runtime_checks(conn, node, engine, install)
            checks.append(_disk_check(conn, node))
            if all(c["ok"] for c in checks):
                checks += _in_runtime_checks(conn, node, engine)
        finally:
            conn.close()
    except NodeError as error:
        checks = [check("reachable", False, str(error), "Probe the node and fix what its error says.")]
    install.selftest = {"checks": checks, "engine": engine.name}
    install.selftest_at = timezone.now()
    install.save(update_fields=["selftest", "selftest_at"])
    logger.info(
        "self-test of %s on %s: %s", engine.name, node.name, "passed" if install.selftest_passed else "failed"
    )
    return install


def selftest_task(node_id: int, engine_name: str) -> str:
    """RQ entry point: the self-test run by a worker of the node's machine (the admin's button queues it)."""
    close_old_connections()
    node = Node.objects.filter(pk=node_id).first()
    if node is None:
        return "skipped"
    try:
        install = selftest_run(node=node, engine_name=engine_name)
    except ServiceError as error:  # the engine left the node's list since the button was pressed
        return str(error)
    return "passed" if install.selftest_passed else "failed"
