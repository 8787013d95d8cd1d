#!/usr/bin/env python3
"""The SyncTalk image's last build step: the code imports, the four CUDA extensions and pytorch3d load, and
every pretrained file loads from the image the way upstream loads it, with downloads made impossible (the
Dockerfile points the proxy variables at a closed port), so a file that would be fetched at run time fails
the build instead. Runs on the build machine's CPU: no GPU is needed (nor usually present) while building.
Line numbers are upstream's (ZiqiaoPeng/SyncTalk @ d2427a3).

    cd /SyncTalk && python smoke_test.py
"""

from __future__ import annotations

import os
import re
import sys
import traceback

ROOT = os.environ.get("ST_HOME", "/SyncTalk")
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
    # The compiled modules the frontends try first (raymarching/raymarching.py:10, gridencoder/grid.py:10,
    # shencoder/sphere_harmonics.py:10, freqencoder/freq.py:10); without them they would JIT-compile.
    import _freqencoder  # noqa: F401
    import _gridencoder  # noqa: F401
    import _raymarching_face  # noqa: F401
    import _shencoder  # noqa: F401
    import freqencoder  # noqa: F401
    import gridencoder  # noqa: F401
    import raymarching  # noqa: F401
    import shencoder  # noqa: F401
    from pytorch3d import _C  # noqa: F401  (face tracking renders the 3DMM with it, render_3dmm.py:5-24)

    return "_raymarching_face, _gridencoder, _shencoder, _freqencoder, pytorch3d._C"


@check
def patches_applied():
    for extension in ("freqencoder", "shencoder", "gridencoder", "raymarching"):
        with open(os.path.join(ROOT, extension, "setup.py")) as handle:
            assert "c++14" not in handle.read(), extension
    with open(os.path.join(ROOT, "data_utils/deepspeech_features/deepspeech_features.py")) as handle:
        assert not re.search(r"\bnp\.float\b(?!\d)", handle.read())
    return "C++17 extensions, np.float32"


@check
def synctalk_modules_import():
    # main.py:3-5; nerf_triplane/utils.py imports lpips, librosa, mcubes, tensorboardX, torch_ema, rich.
    import main  # noqa: F401
    import nerf_triplane.provider  # noqa: F401

    return "main, nerf_triplane"


@check
def audio_visual_encoder_loads():
    import torch
    from nerf_triplane.network import AudioEncoder

    # As nerf_triplane/provider.py:173-175 loads it (on the CPU here).
    model = AudioEncoder().eval()
    ckpt = torch.load("./nerf_triplane/checkpoints/audio_visual_encoder.pth", map_location="cpu")
    model.load_state_dict({f"audio_encoder.{k}": v for k, v in ckpt.items()})
    return f"{len(ckpt)} tensors"


@check
def face_parsing_loads():
    import torch

    sys.path.insert(0, os.path.join(ROOT, "data_utils/face_parsing"))
    from model import BiSeNet  # data_utils/face_parsing/test.py:4

    # BiSeNet's backbone loads resnet18-5c106cde.pth through torch's model zoo (resnet.py:11, :83): the
    # cache must hold it. Then the parsing weights, as test.py:113 loads them.
    net = BiSeNet(n_classes=19)
    net.load_state_dict(torch.load("data_utils/face_parsing/79999_iter.pth", map_location="cpu"))
    return "resnet18 + BiSeNet 79999_iter.pth"


@check
def unfaceflow_weights_load():
    import torch

    folder = os.path.join(ROOT, "data_utils/UNFaceFlow")
    # test_flow.py:44 and :47-50.
    for name in ("pretrain_model/raft-small.pth", "sgd_NNRT_model_epoch19008_50000.pth"):
        state = torch.load(os.path.join(folder, name), map_location="cpu")
        assert isinstance(state, dict) and state, name
    return "raft-small.pth, sgd_NNRT_model_epoch19008_50000.pth"


@check
def face_landmarker_loads():
    from mediapipe.tasks import python
    from mediapipe.tasks.python import vision

    # data_utils/blendshape_capture/main.py:27-32, with the same path relative to the repository root.
    base_options = python.BaseOptions(model_asset_path="./data_utils/blendshape_capture/face_landmarker.task")
    options = vision.FaceLandmarkerOptions(
        base_options=base_options,
        output_face_blendshapes=True,
        output_facial_transformation_matrixes=True,
        num_faces=1,
    )
    vision.FaceLandmarker.create_from_options(options).close()
    import onnxruntime  # noqa: F401  (blendshape_capture/main.py:15 imports it)

    return "face_landmarker.task"


@check
def face_alignment_weights_load():
    import face_alignment

    # data_utils/process.py:55-57 and the LMD metric, nerf_triplane/utils.py:539-541.
    face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, flip_input=False, device="cpu")
    return "s3fd + 2DFAN4 from the torch hub cache"


@check
def lpips_alexnet_loads():
    import lpips

    lpips.LPIPS(net="alex")  # every Trainer builds it (nerf_triplane/utils.py:695-698), and LPIPSMeter (:489)
    return "alexnet-owt-7be5be79.pth from the torch hub cache"


@check
def deepspeech_graph_loads():
    sys.path.insert(0, os.path.join(ROOT, "data_utils/deepspeech_features"))
    from deepspeech_features import prepare_deepspeech_net

    graph, logits, *_ = prepare_deepspeech_net(DEEPSPEECH)
    return f"{DEEPSPEECH}: {logits.name}"


@check
def morphable_model_converted():
    info = os.path.join(ROOT, "data_utils/face_tracking/3DMM/3DMM_info.npy")  # facemodel.py:14-15 reads it
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
