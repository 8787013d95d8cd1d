#!/usr/bin/env python3
"""Shipped to and run on the GPU node, inside SyncTalk's environment (its repository root is the working
directory; torch, its CUDA extensions, the AVE checkpoint
``nerf_triplane/checkpoints/audio_visual_encoder.pth``).

Talkforge: SyncTalk's backend for the live render session (``avatars/engines/node/live_session.py``): its
trainer in test mode with the checkpoint and the Audio-Visual Encoder (AVE) loaded once. Every upstream
call is cited at ZiqiaoPeng/SyncTalk commit d2427a3.

At load (``Backend(config)``):
  - ``opt`` exactly as ``main.py`` parses it: its parser (main.py:17–120, read from main.py itself, which
    keeps it under ``if __name__ == '__main__'``) given the command line the engine's speech render uses
    (``data --workspace ws -O --test --test_train --asr_model ave [--portrait] --ckpt <checkpoint>``), then
    main.py:122–131 (``-O`` → fp16 and exp_eye; ``cuda_ray = True``);
  - ``seed_everything(opt.seed)`` (main.py:144), ``NeRFNetwork(opt)`` (:148), ``L1Loss`` (:172), no metrics
    (main.py:178, as for its GUI), ``Trainer('ngp', opt, model, device=…, workspace=opt.workspace,
    criterion=…, fp16=opt.fp16, metrics=[], use_checkpoint=opt.ckpt)`` — the checkpoint loaded (:183);
  - ``NeRFDataset(opt, device=device, type='train')`` with ``training = False`` and ``num_rays = -1``
    (main.py:186–189), ``model.aud_features``/``model.eye_areas`` from it (:196–197), ``model.eval()``
    (nerf_triplane/utils.py:1057);
  - the AVE: ``AudioEncoder().to(device).eval()``, ``torch.load(…audio_visual_encoder.pth)``,
    ``load_state_dict({'audio_encoder.' + k: v})`` (nerf_triplane/provider.py:196–198).

Per sentence (``frames(wav, pose_start, stop)``):
  - the features as provider.py:199–209 and :218–223 make them for ``--aud x.wav``: ``AudDataset(wav)``,
    ``DataLoader(batch_size=64)``, ``model(mel)`` under ``no_grad``, the first and last rows repeated
    twice, ``torch.from_numpy(…).unsqueeze(0)``, ``permute(1, 0, 2)``; they become the dataset's ``auds``
    (provider.py:437) and the model's (main.py:196);
  - the frames as ``Trainer.test`` makes them (nerf_triplane/utils.py:1062–1081): ``test_step(data)`` under
    ``autocast(enabled=fp16)``, ``linear_to_srgb`` for a linear colour space, ``blend_with_mask_cuda`` for
    ``--portrait``, ``× 255`` as uint8. The loader is provider.py:668's (``batch_size=1,
    collate_fn=dataset.collate``) over indices ``pose_start … pose_start + T``: ``collate`` mirrors each
    index into the poses (provider.py:515–538, the ping-pong the chat continues from sentence to
    sentence) and reads the audio at the same index, so the features are preceded by ``pose_start`` copies
    of their first row (never read but as the window's left edge, like upstream's own edge padding).

Config: ``{"argv": [main.py's arguments]}``.
"""

import argparse
import os
import re
import sys

MAIN_PARSER = re.compile(
    r"^\s*parser = argparse\.ArgumentParser\(\).*?^\s*opt = parser\.parse_args\(\)", re.M | re.S
)


def main_options(root, argv):
    """``opt`` as main.py:17–120 parses ``argv``, then main.py:122–131."""
    with open(os.path.join(root, "main.py")) as handle:
        source = handle.read()
    found = MAIN_PARSER.search(source)
    if found is None:
        raise RuntimeError(f"{root}/main.py has no parser block (main.py:17–120 at d2427a3)")
    block = "\n".join(line[4:] if line.startswith("    ") else line for line in found.group(0).splitlines())
    scope = {"argparse": argparse}
    saved, sys.argv = sys.argv, ["main.py", *argv]
    try:
        exec(compile(block, f"{root}/main.py", "exec"), scope)  # noqa: S102 - upstream's own parser
    finally:
        sys.argv = saved
    opt = scope["opt"]
    if opt.O:  # main.py:122–124
        opt.fp16 = True
        opt.exp_eye = True
    opt.cuda_ray = True  # main.py:131
    return opt


class Backend:
    def __init__(self, config):
        root = config.get("repo") or os.getcwd()
        if root not in sys.path:
            sys.path.insert(0, root)
        import numpy as np
        import torch
        from nerf_triplane.network import AudioEncoder, NeRFNetwork
        from nerf_triplane.provider import NeRFDataset
        from nerf_triplane.utils import Trainer, seed_everything

        self.np, self.torch = np, torch
        opt = main_options(root, config["argv"])
        self.opt = opt
        seed_everything(opt.seed)  # main.py:144
        self.device = device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # main.py:146
        model = NeRFNetwork(opt)  # main.py:148
        criterion = torch.nn.L1Loss(reduction="none")  # main.py:172
        self.trainer = Trainer("ngp", opt, model, device=device, workspace=opt.workspace, criterion=criterion,
                               fp16=opt.fp16, metrics=[], use_checkpoint=opt.ckpt)  # main.py:183  # fmt: skip
        test_set = NeRFDataset(opt, device=device, type="train")  # main.py:186
        test_set.training = False  # main.py:188
        test_set.num_rays = -1  # main.py:189
        self.test_set, self.model = test_set, model
        model.aud_features = test_set.auds  # main.py:196
        model.eye_areas = test_set.eye_area  # main.py:197
        self.trainer.model.eval()  # nerf_triplane/utils.py:1057
        encoder = AudioEncoder().to(device).eval()  # provider.py:196
        ckpt = torch.load("./nerf_triplane/checkpoints/audio_visual_encoder.pth")  # provider.py:197
        encoder.load_state_dict({f"audio_encoder.{k}": v for k, v in ckpt.items()})  # provider.py:198
        self.encoder = encoder
        # One frame of the dataset's own audio at its first pose: wakes CUDA up and gives the frame size.
        with torch.no_grad():
            first = self._render(self.test_set.collate([0]))
        self.height, self.width = first.shape[0] - first.shape[0] % 2, first.shape[1] - first.shape[1] % 2

    def features(self, wav):
        """AVE features of ``wav`` (provider.py:199–209, :218–223)."""
        from nerf_triplane.utils import AudDataset
        from torch.utils.data import DataLoader

        torch = self.torch
        data_loader = DataLoader(AudDataset(wav), batch_size=64, shuffle=False)  # provider.py:199–200
        outputs = []
        for mel in data_loader:  # provider.py:202–206
            mel = mel.to(self.device)
            with torch.no_grad():
                out = self.encoder(mel)
            outputs.append(out)
        outputs = torch.cat(outputs, dim=0).cpu()  # provider.py:207
        first_frame, last_frame = outputs[:1], outputs[-1:]  # provider.py:208
        aud_features = torch.cat([first_frame.repeat(2, 1), outputs, last_frame.repeat(2, 1)], dim=0).numpy()
        aud_features = torch.from_numpy(aud_features).unsqueeze(0)  # provider.py:219
        if len(aud_features.shape) == 3:
            aud_features = aud_features.float().permute(1, 0, 2)  # provider.py:222–223
        return aud_features

    def frames(self, wav, pose_start, should_stop):
        from torch.utils.data import DataLoader

        torch, np = self.torch, self.np
        features = self.features(wav)
        count = features.shape[0]
        # The audio at index pose_start + i is sentence frame i (see the module docstring).
        padded = torch.cat([features[:1].repeat(pose_start, *([1] * (features.dim() - 1))), features], dim=0)
        self.test_set.auds = padded.to(self.device)  # provider.py:437, :477–478
        self.model.aud_features = self.test_set.auds  # main.py:196
        indices = list(range(pose_start, pose_start + count))
        loader = DataLoader(indices, batch_size=1, collate_fn=self.test_set.collate, shuffle=False,
                            num_workers=0)  # provider.py:668  # fmt: skip
        with torch.no_grad():  # utils.py:1062
            for data in loader:
                if should_stop():
                    return
                pred = self._render(data)
                yield np.ascontiguousarray(pred[: self.height, : self.width, :3]).tobytes()

    def _render(self, data):
        """One frame as Trainer.test makes it (nerf_triplane/utils.py:1066–1081): HWC RGB uint8."""
        from nerf_triplane.utils import blend_with_mask_cuda, linear_to_srgb

        torch, np, trainer, opt = self.torch, self.np, self.trainer, self.opt
        with torch.cuda.amp.autocast(enabled=trainer.fp16):
            preds, preds_depth = trainer.test_step(data)  # utils.py:1066–1067
        if opt.color_space == "linear":
            preds = linear_to_srgb(preds)  # utils.py:1074–1075
        if opt.portrait:  # utils.py:1076–1078
            pred = blend_with_mask_cuda(
                preds[0], data["bg_gt_images"].squeeze(0), data["bg_face_mask"].squeeze(0)
            )
            return (pred * 255).astype(np.uint8)
        pred = preds[0].detach().cpu().numpy()  # utils.py:1080–1081
        return (pred * 255).astype(np.uint8)
