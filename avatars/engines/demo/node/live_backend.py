#!/usr/bin/env python3
"""Shipped to and run on the node, GPU or CPU (standard library and ffmpeg only).

Talkforge demo engine: the live render session's backend (``avatars/engines/node/live_session.py``). NOT a
trained model. At load it decodes the dataset's val-split ground-truth frames once (``gt_imgs/<id>.jpg`` of
``transforms_val.json``, even-sided as the encode of render.py's output is: videos/job_kind.py
``web_video``); per request it emits one frame per 25-fps frame of the audio (as many as DeepSpeech
features have windows: ``demo/node/features.py``), its poses from ``pose_start`` along the ping-pong order
the chat uses (``node/pose_view.py`` ``mirror_index``), each with a bar along the bottom as wide as that
frame's 40 ms of audio is loud: the visible, honest marker that the mouth is not a model's.

Config: ``{"source": dataset folder, "fps": frames per second to pace at (0: as fast as it goes)}``.
"""

import array
import json
import math
import os
import subprocess
import sys
import time
import wave

FPS = 25
BAR = 10  # rows of the loudness bar


def mirror_index(index, size):
    """As node/pose_view.py: the frame at ``index`` of ``size`` frames played forward, backward, …"""
    turn, rest = divmod(index, size)
    return rest if turn % 2 == 0 else size - rest - 1


def image_size(path):
    output = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
         "-of", "csv=p=0", path],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    width, height = (int(value) for value in output.strip().split(",")[:2])
    return width - width % 2, height - height % 2


def decode(path, width, height):
    return subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-vf", f"scale={width}:{height}",
         "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip


def loudness(wav):
    """Per 25-fps frame of ``wav`` (16-bit PCM), its RMS level from 0 to 1."""
    with wave.open(wav, "rb") as handle:
        if handle.getsampwidth() != 2:
            raise ValueError(f"{wav} is not 16-bit PCM")
        rate, channels = handle.getframerate(), handle.getnchannels()
        samples = array.array("h", handle.readframes(handle.getnframes()))
    if sys.byteorder == "big":
        samples.byteswap()
    if channels > 1:
        samples = samples[::channels]
    frames = max(1, math.ceil(round(len(samples) / rate * 50) / 2))  # demo/node/features.py frames_for
    step = rate / FPS
    levels = []
    for index in range(frames):
        part = samples[int(index * step) : int((index + 1) * step)]
        rms = math.sqrt(sum(value * value for value in part) / len(part)) if part else 0.0
        levels.append(min(1.0, rms / 8000))
    return levels


class Backend:
    def __init__(self, config):
        source = config["source"]
        with open(os.path.join(source, "transforms_val.json")) as handle:
            ids = [frame["img_id"] for frame in json.load(handle)["frames"]]
        if not ids:
            raise ValueError(f"{source}/transforms_val.json lists no frames")
        paths = [os.path.join(source, "gt_imgs", f"{img_id}.jpg") for img_id in ids]
        self.width, self.height = image_size(paths[0])
        self.poses = [decode(path, self.width, self.height) for path in paths]
        self.fps = float(config.get("fps") or 0)

    def frames(self, wav, pose_start, should_stop):
        levels = loudness(wav)
        width, height = self.width, self.height
        row = width * 3
        started = time.monotonic()
        for index, level in enumerate(levels):
            if should_stop():
                return
            frame = bytearray(self.poses[mirror_index(pose_start + index, len(self.poses))])
            filled = int(round(level * width))
            dark = b"\x10\x10\x10" * width
            bar = b"\x40\xe0\x40" * filled + b"\x10\x10\x10" * (width - filled)
            for line in range(height - BAR, height):
                frame[line * row : (line + 1) * row] = bar if line > height - BAR + 1 else dark
            if self.fps:
                wait = started + index / self.fps - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            yield bytes(frame)
