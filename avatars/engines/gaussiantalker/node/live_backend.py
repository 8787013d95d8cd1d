#!/usr/bin/env python3
"""Shipped to and run on the GPU node, inside GaussianTalker's environment (its repository root is the
working directory and first on ``sys.path``; torch, TensorFlow 1 compat, its CUDA extensions).

Talkforge: GaussianTalker's backend for the live render session (``avatars/engines/node/live_session.py``).
It does once what upstream ``render.py`` does before its first frame, and per sentence what it does for
``--custom_aud``, without leaving the process. Every upstream call is cited at KU-CVLAB/GaussianTalker
commit 8ec613b:

At load (``Backend(config)``):
  - the arguments as render.py:210–224 builds them (``ModelParams(parser, sentinel=True)``,
    ``PipelineParams``, ``ModelHiddenParams``, ``get_combined_args``, which reads ``cfg_args`` of the
    model folder), merged with ``--configs`` by mmcv (render.py:226–230), ``safe_state`` (render.py:232),
    ``args.only_infer = True`` (render.py:233);
  - under ``torch.no_grad()`` (render.py:161): ``GaussianModel(dataset.sh_degree, hyperparam)``
    (render.py:163), ``Scene(dataset, gaussians, load_iteration=iteration, shuffle=False)`` — the Gaussians,
    the deformation network and the dataset's cameras (render.py:164), ``gaussians.eval()`` (render.py:166);
  - what the custom cameras need besides the audio, read as ``readTalkingPortraitDatasetInfo`` reads it:
    ``au.csv``'s `` AU45_r`` (scene/talking_dataset_readers.py:358–360) and ``read_timeline(path)`` (:366);
  - the DeepSpeech graph, once: ``get_deepspeech_model_file()`` (data_utils/deepspeech_features/
    extract_ds_features.py:105), ``prepare_deepspeech_net(pb)`` (deepspeech_features.py:41, :78–109) and
    one ``tf.compat.v1.Session(graph=graph)`` kept open (deepspeech_features.py:44).

Per sentence (``frames(wav, pose_start, stop)``):
  - DeepSpeech features as ``conv_audios_to_deepspeech`` makes them (deepspeech_features.py:48–75):
    ``wavfile.read``, ``pure_conv_audio_to_deepspeech(..., audio_window_size=1, audio_window_stride=1,
    num_frames=None, net_fn=sess.run(logits_ph, …))``, ``reshape(-1, 29)``, zero pad 8, windows of 16 with
    stride 2 → ``[T, 16, 29]``;
  - the custom cameras as ``readTalkingPortraitDatasetInfo`` builds them for ``--custom_aud``
    (talking_dataset_readers.py:376–383: ``torch.from_numpy``, ``.float().permute(0, 2, 1)``,
    ``readCamerasFromTracksTransforms(path, "track_params.pt", <transforms>, aud, eye, ".jpg",
    timestamp_mapper, custom_aud=…)``) over the val poses played ping-pong from ``pose_start`` (the
    transforms file the chat's pose view writes: node/pose_view.py), then ``FourDGSdataset(cams, args,
    "ER-NeRF")`` (scene/__init__.py:65);
  - render.py's loop (render.py:58, :85–95): a ``DataLoader(batch_size=batch, shuffle=False,
    collate_fn=list)`` (no worker processes: one sentence at a time), ``render_from_batch(cams, gaussians,
    pipeline, random_color=False, stage='fine', batch_size=batch, visualize_attention=False,
    only_infer=True)``, ``output["rendered_image_tensor"]``; each frame as render.py's ``to8b``
    (render.py:45) and ``tensor_to_image`` (:191–205) make it: ``255 × clip(0, 1)`` as uint8, HWC, RGB.

Config: ``{"source", "model", "iteration", "batch", "configs", "sh_degree"?}``.
"""

import json
import os
import sys
from argparse import ArgumentParser

VAL = "transforms_val.json"


def mirror_index(index, size):
    """As node/pose_view.py: the frame at ``index`` of ``size`` frames played forward, backward, …"""
    turn, rest = divmod(index, size)
    return rest if turn % 2 == 0 else size - rest - 1


class Backend:
    def __init__(self, config):
        # The session runs in the repository root (the engine's cwd on the node): upstream's modules import
        # from there, and DeepSpeech's helpers from their own folder, as extract_ds_features.py runs.
        root = config.get("repo") or os.getcwd()
        for folder in (os.path.join(root, "data_utils", "deepspeech_features"), root):
            if folder not in sys.path:
                sys.path.insert(0, folder)
        import numpy as np
        import torch
        from arguments import ModelHiddenParams, ModelParams, PipelineParams, get_combined_args
        from gaussian_renderer import GaussianModel
        from scene import Scene
        from utils.general_utils import safe_state

        self.np, self.torch = np, torch
        self.source, self.batch = config["source"], int(config.get("batch", 16))
        # render.py:210–224: its parser, fed the arguments its command line would carry.
        parser = ArgumentParser(description="Testing script parameters")
        model = ModelParams(parser, sentinel=True)
        pipeline = PipelineParams(parser)
        hyperparam = ModelHiddenParams(parser)
        parser.add_argument("--iteration", default=-1, type=int)
        parser.add_argument("--quiet", action="store_true")
        parser.add_argument("--configs", type=str)
        parser.add_argument("--batch", type=int, required=True)
        argv = ["render.py", "-s", self.source, "--model_path", config["model"],
                "--iteration", str(config.get("iteration", -1)), "--batch", str(self.batch)]  # fmt: skip
        if config.get("configs"):
            argv += ["--configs", config["configs"]]
        saved, sys.argv = sys.argv, argv
        try:
            args = get_combined_args(parser)
        finally:
            sys.argv = saved
        if args.configs:  # render.py:226–230
            import mmcv
            from utils.params_utils import merge_hparams

            args = merge_hparams(args, mmcv.Config.fromfile(args.configs))
        safe_state(args.quiet)  # render.py:232
        args.only_infer = True  # render.py:233
        self.args = args
        self.pipeline = pipeline.extract(args)
        dataset = model.extract(args)
        with torch.no_grad():  # render.py:161–166
            self.gaussians = GaussianModel(dataset.sh_degree, hyperparam.extract(args))
            self.scene = Scene(dataset, self.gaussians, load_iteration=args.iteration, shuffle=False)
            self.gaussians.eval()
        self._load_custom_camera_inputs()
        self._load_deepspeech()
        with open(os.path.join(self.source, VAL)) as handle:
            self.transforms = json.load(handle)
        self.val = self.transforms["frames"]
        first = self._render_frames(self._features_for_frames(1), 0)  # warms CUDA up; gives the size
        height, width = first[0].shape[:2]
        self.height, self.width = height - height % 2, width - width % 2  # yuv420p: even sides

    def _load_custom_camera_inputs(self):
        import pandas as pd
        from scene.dataset_readers import read_timeline

        au_blink_info = pd.read_csv(os.path.join(self.source, "au.csv"))  # talking_dataset_readers.py:359
        self.eye_features = au_blink_info[" AU45_r"].values  # :360
        self.timestamp_mapper, _ = read_timeline(self.source)  # :366

    def _load_deepspeech(self):
        import tensorflow.compat.v1 as tf
        from deepspeech_features import prepare_deepspeech_net
        from deepspeech_store import get_deepspeech_model_file

        tf.disable_v2_behavior()  # deepspeech_features.py:14
        graph, self.logits_ph, self.input_node_ph, self.input_lengths_ph = prepare_deepspeech_net(
            get_deepspeech_model_file()
        )  # extract_ds_features.py:105, deepspeech_features.py:41
        self.session = tf.compat.v1.Session(graph=graph)  # deepspeech_features.py:44, kept open

    # -- per sentence --

    def features(self, wav):
        """``[T, 16, 29]`` DeepSpeech windows of ``wav`` (deepspeech_features.py:48–75)."""
        from deepspeech_features import pure_conv_audio_to_deepspeech
        from scipy.io import wavfile

        np = self.np
        audio_sample_rate, audio = wavfile.read(wav)
        if audio.ndim != 1:
            audio = audio[:, 0]
        ds_features = pure_conv_audio_to_deepspeech(
            audio=audio, audio_sample_rate=audio_sample_rate, audio_window_size=1, audio_window_stride=1,
            num_frames=None,
            net_fn=lambda x: self.session.run(
                self.logits_ph,
                feed_dict={self.input_node_ph: x[np.newaxis, ...], self.input_lengths_ph: [x.shape[0]]},
            ),
        )  # fmt: skip
        net_output = ds_features.reshape(-1, 29)
        win_size = 16
        zero_pad = np.zeros((int(win_size / 2), net_output.shape[1]))
        net_output = np.concatenate((zero_pad, net_output, zero_pad), axis=0)
        windows = [net_output[i : i + win_size] for i in range(0, net_output.shape[0] - win_size, 2)]
        return np.array(windows)

    def _features_for_frames(self, count):
        return self.np.zeros((count, 16, 29), dtype="float32")  # the warm-up frame: silence

    def _render_frames(self, features, pose_start, should_stop=lambda: False):
        return list(self._frames(features, pose_start, should_stop))

    def _frames(self, features, pose_start, should_stop):
        from gaussian_renderer import render_from_batch
        from scene.dataset import FourDGSdataset
        from scene.talking_dataset_readers import readCamerasFromTracksTransforms
        from torch.utils.data import DataLoader

        torch, np = self.torch, self.np
        count = features.shape[0]
        poses = [self.val[mirror_index(pose_start + i, len(self.val))] for i in range(count)]
        view = dict(self.transforms, frames=poses)
        name = f".talkforge-live-{os.getpid()}.json"  # the pose view, beside the dataset's own transforms
        with open(os.path.join(self.source, name), "w") as handle:
            json.dump(view, handle)
        try:
            aud = torch.from_numpy(features).float().permute(0, 2, 1)  # talking_dataset_readers.py:376–378
            cams = readCamerasFromTracksTransforms(
                self.source,
                "track_params.pt",
                name,
                aud,
                self.eye_features,
                ".jpg",
                self.timestamp_mapper,
                custom_aud=name,
            )  # talking_dataset_readers.py:382–383
        finally:
            os.remove(os.path.join(self.source, name))
        loader = DataLoader(FourDGSdataset(cams, self.args, "ER-NeRF"), batch_size=self.batch, shuffle=False,
                            num_workers=0, collate_fn=list)  # fmt: skip
        with torch.no_grad():
            for viewpoint_cams in loader:
                if should_stop():
                    return
                output = render_from_batch(
                    viewpoint_cams,
                    self.gaussians,
                    self.pipeline,
                    random_color=False,
                    stage="fine",
                    batch_size=self.batch,
                    visualize_attention=False,
                    only_infer=True,
                )  # render.py:89–91
                images = output["rendered_image_tensor"].cpu().numpy()  # [B, 3, H, W] in 0..1
                for image in images:
                    yield (255 * np.clip(image, 0, 1)).astype(np.uint8).transpose(1, 2, 0)

    def frames(self, wav, pose_start, should_stop):
        for frame in self._frames(self.features(wav), pose_start, should_stop):
            yield frame[: self.height, : self.width].tobytes()
