#!/usr/bin/env python3
"""Shipped to and run on the GPU node, by the engine's own interpreter (standard library only).

The in-runtime half of a node self-test: ``python selftest.py '<json>'``, run by the engine's own
interpreter inside its image (docker) or environment (bare), in its repository folder.

The JSON names what to look for: ``extensions`` (import names of the compiled extensions) and
``weights`` (``path``, ``root`` "repo" or "home", ``source``: the upstream line that loads it). It prints
one line, ``TALKFORGE-SELFTEST <json>``, with a list of checks: ``name``, ``ok``, ``detail`` and, when
not ok, ``fix``. Standard library only until it tries torch, so it reports a broken environment too.
"""

import importlib
import json
import os
import shutil
import subprocess
import sys

MARK = "TALKFORGE-SELFTEST "


def check(name, ok, detail, fix=""):
    return {"name": name, "ok": bool(ok), "detail": detail, "fix": "" if ok else fix}


def gpu_check():
    try:
        import torch
    except Exception as error:  # noqa: BLE001 - any failure to import is the finding
        return check(
            "gpu",
            False,
            f"torch does not import: {error}",
            "Install the engine's torch build (its README's pip line) into this runtime.",
        )
    if not torch.cuda.is_available():
        return check(
            "gpu",
            False,
            f"torch {torch.__version__} sees no CUDA GPU",
            "Give the runtime the GPU: the NVIDIA driver on the node, the NVIDIA container toolkit for "
            "docker (docker run --gpus), and a torch built for CUDA.",
        )
    free, total = torch.cuda.mem_get_info(0)
    name = torch.cuda.get_device_name(0)
    return check(
        "gpu", True, f"{name}, {free // 2**20} MiB free of {total // 2**20} MiB (torch {torch.__version__})"
    )


def extension_check(module):
    sys.path.insert(0, os.getcwd())  # upstream imports its own packages from the repository root
    try:
        importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 - an extension that fails to load fails whatever the reason
        return check(
            f"extension {module}",
            False,
            f"does not import: {error}",
            "Build and install the engine's extensions as its README says (the image does this).",
        )
    finally:
        sys.path.pop(0)
    return check(f"extension {module}", True, "imports")


def weight_check(weight):
    base = os.getcwd() if weight["root"] == "repo" else os.path.expanduser("~")
    path = os.path.join(base, weight["path"])
    if os.path.isfile(path) and os.path.getsize(path) > 0:
        return check(f"weight {weight['path']}", True, f"{path} ({os.path.getsize(path)} bytes)")
    return check(
        f"weight {weight['path']}",
        False,
        f"{path} is missing or empty",
        f"Put the file there (upstream loads it at {weight['source']}; the engine's README says "
        "where to get it).",
    )


def ffmpeg_check():
    found = shutil.which("ffmpeg")
    if not found:
        return check(
            "ffmpeg", False, "ffmpeg is not on PATH", "Install ffmpeg in the runtime (apt install ffmpeg)."
        )
    first = subprocess.run([found, "-version"], capture_output=True, text=True, check=False).stdout.split(
        "\n"
    )[0]
    return check("ffmpeg", True, first or found)


def main():
    wanted = json.loads(sys.argv[1])
    checks = [check("python", True, f"{sys.executable} {sys.version.split()[0]} in {os.getcwd()}")]
    checks.append(gpu_check())
    checks += [extension_check(module) for module in wanted.get("extensions", [])]
    checks += [weight_check(weight) for weight in wanted.get("weights", [])]
    checks.append(ffmpeg_check())
    print(MARK + json.dumps(checks), flush=True)


if __name__ == "__main__":
    main()
