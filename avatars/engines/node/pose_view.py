#!/usr/bin/env python3
"""Shipped to and run on the GPU node (standard library only).

Talkforge: the per-job views of a trained avatar that a video generation renders from.

Run on the node as the first command of a generation job (standard library only, so it runs in any
Python on any node, inside the engine's container too).

``--dataset D --view V --frames N``: makes ``V`` a view of the dataset ``D``: a symlink to every entry of
``D`` except ``transforms_val.json``, which is written anew with ``D``'s val frames played ping-pong (forward,
backward, forward, …) until there are ``N`` of them. GaussianTalker drives custom audio with the val pose
sequence and renders no more frames than it holds (render.py:90–95 at 8ec613b), so audio longer than the val
split would be cut; played back and forth the poses cover the whole audio without a jump cut where they loop.
The turning frame is shown twice, as SyncTalk's own ``mirror_index`` does. ``--start S`` begins at frame ``S``
of that endless sequence instead of its first: a chat reply renders one sentence at a time, and sentence k's
poses go on where sentence k-1's ended (S = the frames rendered before it), so the head never jumps between
consecutive clips.

``--link SOURCE TARGET`` (repeatable): a symlink ``TARGET`` → ``SOURCE`` (parents made), e.g. the model
view's ``cfg_args`` and ``point_cloud``: render.py writes ``<model_path>/custom/ours_<iter>/``, so two
generations of one avatar each need a model folder of their own.
"""

import argparse
import json
import os
import sys

VAL = "transforms_val.json"


def mirror_index(index, size):
    """The frame shown at ``index`` of a sequence of ``size`` frames played forward, backward, forward…"""
    turn, rest = divmod(index, size)
    return rest if turn % 2 == 0 else size - rest - 1


def link(source, target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.lexists(target):
        os.remove(target)
    os.symlink(source, target)


def dataset_view(dataset, view, frames, start=0):
    with open(os.path.join(dataset, VAL)) as handle:
        transforms = json.load(handle)
    val = transforms.get("frames") or []
    if not val:
        print(f"[ERROR] {dataset}/{VAL} lists no frames: preprocess the avatar again", file=sys.stderr)
        return 1
    os.makedirs(view, exist_ok=True)
    for name in sorted(os.listdir(dataset)):
        if name != VAL:
            link(os.path.join(dataset, name), os.path.join(view, name))
    transforms["frames"] = [val[mirror_index(start + i, len(val))] for i in range(frames)]
    transforms["talkforge_pose_view"] = (
        f"the {len(val)} val frames of {dataset} played ping-pong to {frames} frames from frame {start}"
    )
    partial = os.path.join(view, f".{VAL}.part")
    with open(partial, "w") as handle:
        json.dump(transforms, handle)
    os.replace(partial, os.path.join(view, VAL))
    loops = frames / len(val)
    print(
        f"[INFO] pose view: {len(val)} val frames played ping-pong to {frames} frames "
        f"({loops:.2f} passes) from frame {start} in {view}",
        flush=True,
    )
    return 0


def main():
    parser = argparse.ArgumentParser(description="Talkforge: per-job dataset and model views")
    parser.add_argument("--dataset", help="the avatar's preprocessed dataset folder")
    parser.add_argument("--view", help="the view to make of it")
    parser.add_argument("--frames", type=int, help="how many val frames the view must hold (25 per s)")
    parser.add_argument(
        "--start", type=int, default=0, help="the first frame of the ping-pong sequence (default 0)"
    )
    parser.add_argument("--link", nargs=2, action="append", default=[], metavar=("SOURCE", "TARGET"))
    args = parser.parse_args()
    if args.dataset and (not args.view or not args.frames or args.frames < 1):
        parser.error("--dataset needs --view and --frames (at least 1)")
    if args.start < 0:
        parser.error("--start must be 0 or more")
    for source, target in args.link:
        if not os.path.lexists(source):
            print(
                f"[ERROR] {source} is missing: the trained model is no longer on this node", file=sys.stderr
            )
            return 1
        link(source, target)
        print(f"[INFO] linked {target} -> {source}", flush=True)
    if args.dataset:
        if not os.path.isfile(os.path.join(args.dataset, VAL)):
            print(f"[ERROR] {args.dataset}/{VAL} is missing: preprocess the avatar again", file=sys.stderr)
            return 1
        return dataset_view(args.dataset, args.view, args.frames, args.start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
