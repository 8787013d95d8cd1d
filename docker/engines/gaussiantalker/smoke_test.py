#!/usr/bin/env python3
"""The image's last build step: GaussianTalker's code imports and every pretrained file loads from the
image, with downloads made impossible (the Dockerfile points the proxy variables at a closed port), so a
file that would be fetched at run time fails the build instead. Runs on the build machine's CPU: no GPU
is needed (nor usually present) while building.

    cd /GaussianTalker && python smoke_test.py
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import traceback

ROOT = os.environ.get("GT_HOME", "/GaussianTalker")
DEEPSPEECH = os.path.expanduser("~/.tensorflow/models/deepspeech-0_1_0-b90017e8.pb")
CHECKS = []


def check(function):
    CHECKS.append(function)
    return function


@check
def torch_has_hopper_kernels():
    import torch

    assert torch.version.cuda and torch.version.cuda.startswith("11.8"), torch.version.cuda
    flags = torch._C._cuda_getArchFlags()  # the compiled architectures; needs no GPU
    assert "sm_90" in flags, f"PyTorch is not built for sm_90: {flags}"
    return f"torch {torch.__version__}, CUDA {torch.version.cuda}, {flags}"


@check
def cuda_extensions_import():
    import diff_gaussian_rasterization
    import simple_knn._C  # noqa: F401
    from pytorch3d import _C  # noqa: F401  (pytorch3d's compiled ops)

    return diff_gaussian_rasterization.__name__


@check
def gaussiantalker_modules_import():
    # train.py builds its VGG16 perceptual loss at import: torchvision's vgg16-397923af.pth from the cache.
    import evaluate  # noqa: F401  (Talkforge's evaluation script, copied beside the code)
    import render  # noqa: F401
    import scene.deformation  # noqa: F401  (imports tkinter)
    import train  # noqa: F401

    return "train, render, scene, evaluate"


@check
def mmcv_config_and_derived_config():
    from mmcv import Config

    base = os.path.join(ROOT, "arguments/64_dim_1_transformer.py")
    shipped = Config.fromfile(base)
    assert shipped.OptimizationParams["iterations"] == 10000, shipped.OptimizationParams
    # The config run_gaussiantalker.sh writes for --iterations: the chosen one, iterations replaced.
    with tempfile.TemporaryDirectory() as folder:
        derived = os.path.join(folder, "config_iterations_1234.py")
        with open(derived, "w") as handle:
            handle.write(f'_base_ = "{base}"\nOptimizationParams = dict(iterations=1234)\n')
        config = Config.fromfile(derived)
    assert config.OptimizationParams["iterations"] == 1234
    assert config.ModelHiddenParams == shipped.ModelHiddenParams
    assert {k: v for k, v in config.OptimizationParams.items() if k != "iterations"} == {
        k: v for k, v in shipped.OptimizationParams.items() if k != "iterations"
    }
    return "64_dim_1_transformer.py and a derived config"


@check
def patches_applied():
    with open(os.path.join(ROOT, "data_utils/deepspeech_features/deepspeech_features.py")) as handle:
        assert not re.search(r"\bnp\.float\b(?!\d)", handle.read())
    with open(os.path.join(ROOT, "scene/talking_dataset_readers.py")) as handle:
        assert "Custom audio mode: limiting render frames to" in handle.read()
    return "np.float32, custom-audio frame clamp"


@check
def deepspeech_graph_loads():
    sys.path.insert(0, os.path.join(ROOT, "data_utils/deepspeech_features"))
    from deepspeech_features import prepare_deepspeech_net

    graph, logits, *_ = prepare_deepspeech_net(DEEPSPEECH)
    return f"{DEEPSPEECH}: {logits.name}"


@check
def face_alignment_weights_load():
    import face_alignment

    face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, flip_input=False, device="cpu")
    return "s3fd + 2DFAN4 from the torch hub cache"


@check
def face_parsing_weights_load():
    import torch
    import torchvision

    # data_utils/face_parsing/resnet.py loads this URL through torch's model zoo: the cache must hold it.
    state = torch.hub.load_state_dict_from_url("https://download.pytorch.org/models/resnet18-5c106cde.pth")
    torchvision.models.resnet18().load_state_dict(state)
    parsing = torch.load(os.path.join(ROOT, "data_utils/face_parsing/79999_iter.pth"), map_location="cpu")
    assert isinstance(parsing, dict) and parsing, "79999_iter.pth is not a state dict"
    return f"resnet18 + BiSeNet ({len(parsing)} tensors)"


@check
def morphable_model_converted():
    info = os.path.join(ROOT, "data_utils/face_tracking/3DMM/3DMM_info.npy")
    assert os.path.getsize(info) > 0, info
    return info


def main() -> int:
    os.chdir(ROOT)
    sys.path.insert(0, ROOT)
    failed = 0
    for function in CHECKS:
        try:
            print(f"ok   {function.__name__}: {function()}", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {function.__name__}", flush=True)
            traceback.print_exc()
    if failed:
        print(f"{failed} of {len(CHECKS)} image checks failed", file=sys.stderr)
        return 1
    print(f"all {len(CHECKS)} image checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
