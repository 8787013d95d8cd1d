"""The real engines' live backends, by their calls: upstream's modules (GaussianTalker at 8ec613b, SyncTalk at
d2427a3) cannot run here (CUDA extensions, weights), so stand-ins for exactly those modules go into
sys.modules, record every call, and return small arrays; torch, numpy and scipy are the real ones. Each test
loads the backend as the live session does and renders a sentence, then checks that the backend made
upstream's calls in upstream's order (the model once, the audio encoder once, then per sentence only the
features and the frames), and that the frames it yields are the rendered images as RGB bytes."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch

from avatars.engines.base import ENGINES_DIR
from avatars.engines.node.live_session import load_backend
from avatars.engines.node.pose_view import mirror_index

H, W = 33, 42  # odd height: the backend crops to even sides for yuv420p


def module(name: str, **attributes) -> types.ModuleType:
    made = types.ModuleType(name)
    made.__dict__.update(attributes)
    return made


def wav_of(path: Path, seconds: float) -> Path:
    tone = f"sine=frequency=300:sample_rate=16000:duration={seconds}"
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", "-f", "lavfi", "-i", tone, "-c:a", "pcm_s16le",
                    str(path)], check=True)  # fmt: skip
    return path


@pytest.fixture
def isolated_imports(monkeypatch):
    """sys.path and the stand-in modules are put back after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))

    def install(modules: dict[str, types.ModuleType]) -> None:
        for name, made in modules.items():
            monkeypatch.setitem(sys.modules, name, made)

    return install


def gaussiantalker_stand_ins(calls: list, source: Path) -> dict[str, types.ModuleType]:
    def record(name):
        def call(*args, **kwargs):
            calls.append((name, args, kwargs))

        return call

    class Params:
        def __init__(self, parser, sentinel=False):
            calls.append((type(self).__name__, (), {"sentinel": sentinel}))

        def extract(self, args):
            return Namespace(sh_degree=3, kind=type(self).__name__)

    class ModelParams(Params): ...

    class PipelineParams(Params): ...

    class ModelHiddenParams(Params): ...

    def get_combined_args(parser):
        calls.append(("get_combined_args", tuple(sys.argv), {}))
        argv = sys.argv[1:]
        return Namespace(configs=argv[argv.index("--configs") + 1], quiet=False,
                         iteration=int(argv[argv.index("--iteration") + 1]))  # fmt: skip

    class GaussianModel:
        def __init__(self, sh_degree, hyper):
            calls.append(("GaussianModel", (sh_degree, hyper.kind), {}))

        def eval(self):
            calls.append(("gaussians.eval", (), {}))

    class Scene:
        def __init__(self, dataset, gaussians, load_iteration=None, shuffle=True):
            calls.append(("Scene", (dataset.kind,), {"load_iteration": load_iteration, "shuffle": shuffle}))

    def read_cameras(path, meshfile, transformsfile, aud, eye, extension, mapper, custom_aud=None):
        frames = json.loads((Path(path) / transformsfile).read_text())["frames"]  # exists while it is read
        calls.append(
            (
                "readCamerasFromTracksTransforms",
                (meshfile, extension),
                {
                    "img_ids": [f["img_id"] for f in frames],
                    "aud_shape": tuple(aud.shape),
                    "custom": bool(custom_aud),
                },
            )
        )
        return [{"img_id": f["img_id"]} for f in frames]  # fmt: skip

    def four_dgs_dataset(cams, args, dataset_type):
        calls.append(("FourDGSdataset", (len(cams), dataset_type), {}))
        return cams

    def render_from_batch(cams, gaussians, pipeline, **kwargs):
        calls.append(("render_from_batch", (len(cams),), kwargs))
        images = torch.stack([torch.full((3, H, W), cam["img_id"] / 255.0) for cam in cams])
        return {"rendered_image_tensor": images}

    class Session:
        def __init__(self, graph):
            calls.append(("tf.Session", (graph,), {}))

        def run(self, logits, feed_dict):
            calls.append(("session.run", (logits,), {"inputs": sorted(feed_dict)}))
            return np.zeros((1, 10, 29), dtype=np.float32)

    def pure_conv_audio_to_deepspeech(audio, audio_sample_rate, audio_window_size, audio_window_stride,
                                      num_frames, net_fn):  # fmt: skip
        calls.append(("pure_conv_audio_to_deepspeech", (audio_sample_rate, audio.dtype.name), {
            "audio_window_size": audio_window_size, "audio_window_stride": audio_window_stride,
            "num_frames": num_frames}))  # fmt: skip
        net_fn(np.zeros((10, 494), dtype=np.int16))
        logits = int(round(len(audio) / audio_sample_rate * 50))  # deepspeech_features.py:158–169
        return np.random.default_rng(0).random((logits, 1, 29))

    class CSV:
        def __getitem__(self, key):
            calls.append(("au.csv column", (key,), {}))
            return Namespace(values=np.zeros(10))

    def returning(name, value, keep=lambda *args: args):
        def call(*args, **kwargs):
            calls.append((name, keep(*args), {}))
            return value(*args) if callable(value) else value

        return call

    tf_v1 = module(
        "tensorflow.compat.v1", disable_v2_behavior=record("tf.disable_v2_behavior"), Session=Session
    )
    tf_v1.compat = Namespace(v1=tf_v1)
    readers = {"readCamerasFromTracksTransforms": read_cameras}
    return {
        "arguments": module("arguments", ModelParams=ModelParams, PipelineParams=PipelineParams,
                            ModelHiddenParams=ModelHiddenParams, get_combined_args=get_combined_args),
        "gaussian_renderer": module("gaussian_renderer", GaussianModel=GaussianModel,
                                    render_from_batch=render_from_batch),
        "scene": module("scene", Scene=Scene),
        "scene.dataset": module("scene.dataset", FourDGSdataset=four_dgs_dataset),
        "scene.talking_dataset_readers": module("scene.talking_dataset_readers", **readers),
        "scene.dataset_readers": module("scene.dataset_readers",
                                        read_timeline=returning("read_timeline", ({}, 100))),
        "utils": module("utils"),
        "utils.general_utils": module("utils.general_utils", safe_state=record("safe_state")),
        "utils.params_utils": module("utils.params_utils",
                                     merge_hparams=returning("merge_hparams", lambda args, cfg: args)),
        "mmcv": module("mmcv", Config=Namespace(fromfile=returning("mmcv.Config.fromfile", "cfg"))),
        "pandas": module("pandas",
                         read_csv=returning("pandas.read_csv", CSV(), keep=lambda p: (Path(p).name,))),
        "tensorflow": module("tensorflow", compat=Namespace(v1=tf_v1)),
        "tensorflow.compat": module("tensorflow.compat", v1=tf_v1),
        "tensorflow.compat.v1": tf_v1,
        "deepspeech_store": module("deepspeech_store", get_deepspeech_model_file=returning(
            "get_deepspeech_model_file", "/weights/deepspeech-0.1.0.pb")),
        "deepspeech_features": module(
            "deepspeech_features", pure_conv_audio_to_deepspeech=pure_conv_audio_to_deepspeech,
            prepare_deepspeech_net=returning("prepare_deepspeech_net",
                                             ("graph", "logits", "input_node", "input_lengths"))),
    }  # fmt: skip


def names(calls) -> list[str]:
    return [name for name, *_ in calls]


def test_gaussiantalker_backend_loads_once_and_renders_a_sentence_as_render_py_does(
    isolated_imports, tmp_path
):
    source = tmp_path / "data"
    source.mkdir()
    val = [{"img_id": 100 + i} for i in range(5)]
    (source / "transforms_val.json").write_text(json.dumps({"focal_len": 1200, "frames": val}))
    calls: list = []
    isolated_imports(gaussiantalker_stand_ins(calls, source))
    backend = load_backend(
        str(ENGINES_DIR / "gaussiantalker" / "node" / "live_backend.py"),
        {"source": str(source), "model": str(tmp_path / "output" / "run-1"), "iteration": 10, "batch": 4,
         "configs": "arguments/64_dim_1_transformer.py", "repo": str(tmp_path / "GaussianTalker")},
    )  # fmt: skip
    loaded = names(calls)
    # render.py:210–233, then render_sets (render.py:161–166), then the DeepSpeech graph once.
    assert loaded[:12] == [
        "ModelParams", "PipelineParams", "ModelHiddenParams", "get_combined_args", "mmcv.Config.fromfile",
        "merge_hparams", "safe_state", "GaussianModel", "Scene", "gaussians.eval", "pandas.read_csv",
        "au.csv column",
    ]  # fmt: skip
    assert calls[0][2] == {"sentinel": True}
    argv = calls[3][1]
    assert argv[argv.index("--model_path") + 1].endswith("output/run-1") and "--batch" in argv
    assert calls[8][2] == {"load_iteration": 10, "shuffle": False}
    assert calls[11][1] == (" AU45_r",)
    assert loaded[12:17] == ["read_timeline", "tf.disable_v2_behavior", "get_deepspeech_model_file",
                             "prepare_deepspeech_net", "tf.Session"]  # fmt: skip
    # A warm-up frame gives the frame size (and wakes CUDA up): one render of silence.
    assert loaded[17:] == ["readCamerasFromTracksTransforms", "FourDGSdataset", "render_from_batch"]
    assert (backend.width, backend.height) == (W, H - 1)
    assert not list(source.glob(".talkforge-live-*"))  # the pose view is removed once read

    calls.clear()
    wav = wav_of(
        tmp_path / "s.wav", 0.5
    )  # 25 logits, padded by 8 each side → 13 windows of 16 with stride 2 → 13 frames
    frames = list(backend.frames(str(wav), 3, lambda: False))
    per_sentence = names(calls)
    assert per_sentence[:2] == ["pure_conv_audio_to_deepspeech", "session.run"]
    assert calls[0][1] == (16000, "int16") and calls[0][2] == {
        "audio_window_size": 1, "audio_window_stride": 1, "num_frames": None}  # fmt: skip
    assert calls[1][2] == {"inputs": ["input_lengths", "input_node"]}
    cameras = calls[2]
    assert cameras[0] == "readCamerasFromTracksTransforms" and cameras[2]["custom"]
    assert cameras[2]["aud_shape"] == (13, 29, 16)  # [T, 16, 29] permuted as talking_dataset_readers.py:378
    assert cameras[2]["img_ids"] == [val[mirror_index(3 + i, 5)]["img_id"] for i in range(13)]
    assert per_sentence[3:] == ["FourDGSdataset"] + ["render_from_batch"] * 4  # 13 frames, batches of 4
    assert calls[4][2] == {"random_color": False, "stage": "fine", "batch_size": 4,
                           "visualize_attention": False, "only_infer": True}  # fmt: skip
    assert len(frames) == 13 and all(len(frame) == W * (H - 1) * 3 for frame in frames)
    # Each frame is its rendered image as RGB bytes (the stand-in paints the pose's id as grey).
    first = np.frombuffer(frames[0], dtype=np.uint8)
    assert set(first.tolist()) == {cameras[2]["img_ids"][0]}
    assert "GaussianModel" not in per_sentence and "prepare_deepspeech_net" not in per_sentence


def synctalk_stand_ins(calls: list) -> dict[str, types.ModuleType]:
    class NeRFNetwork:
        def __init__(self, opt):
            calls.append(
                ("NeRFNetwork", (), {"fp16": opt.fp16, "cuda_ray": opt.cuda_ray, "portrait": opt.portrait})
            )

        def eval(self):
            calls.append(("model.eval", (), {}))

    class AudioEncoder:
        def __init__(self):
            calls.append(("AudioEncoder", (), {}))

        def to(self, device):
            return self

        def eval(self):
            calls.append(("encoder.eval", (), {}))
            return self

        def load_state_dict(self, state):
            calls.append(("encoder.load_state_dict", tuple(sorted(state)), {}))

        def __call__(self, mel):
            calls.append(("encoder", (tuple(mel.shape),), {}))
            return torch.ones(mel.shape[0], 512)

    class NeRFDataset:
        def __init__(self, opt, device, type="train", downscale=1):
            calls.append(("NeRFDataset", (type,), {"aud": opt.aud, "path": opt.path}))
            self.auds, self.eye_area = torch.zeros(50, 1, 512), torch.zeros(50)

        def collate(self, index):
            calls.append(("collate", (list(index),), {}))
            return {"index": index[0], "bg_gt_images": torch.zeros(1, H, W, 3),
                    "bg_face_mask": torch.zeros(1, H, W)}  # fmt: skip

    class Trainer:
        def __init__(self, name, opt, model, **kwargs):
            calls.append(("Trainer", (name,), {k: v for k, v in kwargs.items() if k != "device"
                                               and k != "criterion"}))  # fmt: skip
            self.model, self.fp16 = model, kwargs["fp16"]

        def test_step(self, data):
            calls.append(("test_step", (data["index"],), {}))
            return torch.full((1, H, W, 3), (data["index"] % 200) / 255.0), torch.zeros(1, H, W)

    def blend_with_mask_cuda(pred, bg, mask):
        calls.append(("blend_with_mask_cuda", (tuple(pred.shape),), {}))
        return pred.numpy()

    class AudDataset:
        def __init__(self, wav):
            calls.append(("AudDataset", (Path(wav).name,), {}))
            self.count = 10  # mel windows: one per 25-fps frame of the stand-in's audio

        def __len__(self):
            return self.count

        def __getitem__(self, index):
            return torch.zeros(1, 80, 16)

    return {
        "nerf_triplane": module("nerf_triplane"),
        "nerf_triplane.network": module("nerf_triplane.network", NeRFNetwork=NeRFNetwork,
                                        AudioEncoder=AudioEncoder),
        "nerf_triplane.provider": module("nerf_triplane.provider", NeRFDataset=NeRFDataset),
        "nerf_triplane.utils": module(
            "nerf_triplane.utils", Trainer=Trainer, AudDataset=AudDataset,
            blend_with_mask_cuda=blend_with_mask_cuda,
            seed_everything=lambda seed: calls.append(("seed_everything", (seed,), {})),
            linear_to_srgb=lambda x: calls.append(("linear_to_srgb", (), {})) or x),
    }  # fmt: skip


def test_synctalk_backend_keeps_its_trainer_and_ave_loaded_and_renders_as_test_mode(
    isolated_imports, tmp_path, monkeypatch
):
    from tests.upstream import upstream_text

    repo = tmp_path / "SyncTalk"
    (repo / "nerf_triplane" / "checkpoints").mkdir(parents=True)
    (repo / "main.py").write_text(upstream_text("synctalk", "main.py"))  # upstream's own parser
    torch.save(
        {"conv.weight": torch.zeros(2)}, repo / "nerf_triplane" / "checkpoints" / "audio_visual_encoder.pth"
    )
    monkeypatch.chdir(repo)  # provider.py:197 reads the AVE checkpoint relative to the repository root
    calls: list = []
    isolated_imports(synctalk_stand_ins(calls))
    argv = ["data/ada", "--workspace", "model/ada", "-O", "--test", "--test_train", "--asr_model", "ave",
            "--portrait", "--ckpt", "model/ada/checkpoints/ngp_ep0010.pth"]  # fmt: skip
    backend = load_backend(str(ENGINES_DIR / "synctalk" / "node" / "live_backend.py"), {"argv": argv})
    assert names(calls) == [
        "seed_everything", "NeRFNetwork", "Trainer", "NeRFDataset", "model.eval", "AudioEncoder",
        "encoder.eval", "encoder.load_state_dict", "collate", "test_step", "blend_with_mask_cuda",
    ]  # fmt: skip
    assert calls[0][1] == (0,)  # main.py's default --seed
    assert calls[1][2] == {"fp16": True, "cuda_ray": True, "portrait": True}  # -O and main.py:131
    assert calls[2][2] == {"workspace": "model/ada", "fp16": True, "metrics": [],
                           "use_checkpoint": "model/ada/checkpoints/ngp_ep0010.pth"}  # fmt: skip
    assert calls[3][1] == ("train",) and calls[3][2] == {"aud": "", "path": "data/ada"}
    assert calls[7][1] == ("audio_encoder.conv.weight",)  # the real file, loaded by the real torch.load
    assert (backend.width, backend.height) == (W, H - 1)

    calls.clear()
    frames = list(backend.frames(str(tmp_path / "s.wav"), 7, lambda: False))
    run = names(calls)
    assert run[:3] == ["AudDataset", "encoder", "collate"]
    assert calls[1][1] == ((10, 1, 80, 16),)  # one batch of at most 64 mels (provider.py:200)
    count = 10 + 4  # the first and last rows repeated twice (provider.py:208–209)
    assert [c[1][0] for c in calls if c[0] == "collate"] == [[7 + i] for i in range(count)]
    assert backend.test_set.auds.shape[0] == 7 + count and backend.model.aud_features is backend.test_set.auds
    assert run.count("test_step") == count == len(frames)
    assert all(len(frame) == W * (H - 1) * 3 for frame in frames)
    assert set(np.frombuffer(frames[0], dtype=np.uint8).tolist()) == {7}  # frame i is pose index 7 + i
    assert "NeRFNetwork" not in run and "Trainer" not in run and "AudioEncoder" not in run
