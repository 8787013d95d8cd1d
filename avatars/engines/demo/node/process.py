#!/usr/bin/env python3
"""Shipped to and run on the node, GPU or CPU (standard library, ffmpeg and ffprobe).

Talkforge demo preprocessing: a CPU stand-in for GaussianTalker's ``data_utils/process.py``. NOT face
parsing, landmark detection or face tracking.

It takes the same arguments (``<dir>/<name>/<name>.mp4 [--task N] [--asr deepspeech]``, plus ``--fail_task``),
prints the same ``[INFO] ===== … =====`` banners for tasks 1–9 (and face tracking's console), and writes the
same layout next to the video, so the platform's preprocessing path runs on any laptop. Standard library and
ffmpeg/ffprobe only, so it can be copied onto any node.

What is real, made with ffmpeg from the video:
- ``aud.wav`` (16 kHz mono), ``aud_train.wav`` (first 10/11), ``aud_novel.wav`` (last 1/11);
- ``ori_imgs/<i>.jpg``: the video's frames at 25 fps, numbered from 0;
- ``gt_imgs/<i>.jpg``: copies of those frames (the real ones have the background replaced by ``bc.jpg``);
- ``bc.jpg``: a copy of the first frame (the real one is the background with the person removed);
- ``torso_imgs/<i>.png``: each frame with an alpha channel that keeps a fixed torso-shaped region;
- the frame count and the ``int(N·10/11)`` train/val split of ``transforms_*.json``.

What is a placeholder, and says so where the format allows:
- ``aud.npy``/``aud_ds.npy``: text files saying they are not DeepSpeech features;
- ``parsing/<i>.png``: one fixed template segmentation (head red, neck green, torso blue, background white)
  sized to the frames, the same for every frame;
- ``ori_imgs/<i>.lms``: 68 landmark lines ``x y`` of a fixed template face scaled to the frame;
- ``track_params.pt``: a text file, not a torch archive; the focal length and the identical poses in
  ``transforms_*.json`` (which also carry a ``talkforge_demo`` key) come from no tracking at all.

Like the real script, a failing ffmpeg does not stop it (the real one uses ``os.system``), and a missing
input of a later task crashes that task with a Python traceback. ``--fail_task 7`` prints the real crash of
a frame without a face (exit 1); ``--fail_task 8`` prints a crash of the face tracker child and goes on,
as process.py does, so the run can even exit 0.
"""

import argparse
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import time

FPS = 25
SAMPLE_RATE = 16000
TRACKING_BATCH = 32
DEMO_FOCAL = 1100
PLACEHOLDER = "talkforge demo placeholder: {what}. Not produced by the real engine.\n"

# The template layout, as fractions of the frame: a head ellipse, a neck, a torso below.
HEAD = "lte(pow((X-W*0.5)/(W*0.2),2)+pow((Y-H*0.4)/(H*0.26),2),1)"
NECK = "lte(abs(X-W*0.5),W*0.08)*gte(Y,H*0.6)*lt(Y,H*0.75)"
TORSO = "gte(Y,H*0.75)*lte(abs(X-W*0.5),W*0.42)"


def banner(text):
    print(f"[INFO] ===== {text} =====", flush=True)


def ffmpeg(*args):
    """Runs ffmpeg without a prompt (-y, stdin closed); like os.system in process.py, a failure only shows."""
    command = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", *args]
    return subprocess.run(command, stdin=subprocess.DEVNULL, check=False).returncode


def probe(path, entries, stream=None):
    command = ["ffprobe", "-v", "error"]
    if stream:
        command += ["-select_streams", stream]
    command += ["-show_entries", entries, "-of", "default=noprint_wrappers=1:nokey=1", path]
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    return result.stdout.split()


def tqdm_bar(n, total, started):
    """tqdm's default bar (no description), as process.py's loops draw it on stderr."""
    elapsed = time.monotonic() - started
    rate = n / elapsed if elapsed > 0 else 0.0
    remaining = (total - n) / rate if rate > 0 else 0
    filled = int(10 * n / total) if total else 10
    clock = lambda s: f"{int(s) // 60:02d}:{int(s) % 60:02d}"  # noqa: E731
    sys.stderr.write(
        f"\r{int(100 * n / total) if total else 100:3d}%|{'█' * filled}{' ' * (10 - filled)}| {n}/{total} "
        f"[{clock(elapsed)}<{clock(remaining)}, {rate:6.2f}it/s]"
    )
    if n == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def frame_paths(ori_imgs_dir):
    """The frames in number order; like the real script, no frames is a crash (IndexError below)."""
    paths = glob.glob(os.path.join(ori_imgs_dir, "*.jpg"))
    paths.sort(key=lambda path: int(os.path.basename(path).split(".")[0]))
    if not paths:  # process.py reads image_paths[0] for the frame size
        raise IndexError("list index out of range")
    return paths


def frame_size(path):
    width, height = probe(path, "stream=width,height", "v:0")[:2]
    return int(width), int(height)


def extract_audio(path, wav_path):
    banner(f"extract audio from {path} to {wav_path}")
    ffmpeg("-i", path, "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "wav", wav_path)
    duration = float((probe(path, "format=duration") or ["0"])[0])
    folder = os.path.dirname(wav_path)
    train, novel = duration * 10 / 11, duration / 11
    common = ["-vn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "wav"]
    ffmpeg("-i", path, *common, "-t", f"{train:.3f}", os.path.join(folder, "aud_train.wav"))
    ffmpeg(
        "-ss",
        f"{duration - novel:.3f}",
        "-i",
        path,
        *common,
        "-t",
        f"{novel:.3f}",
        os.path.join(folder, "aud_novel.wav"),
    )
    banner("extracted audio")


def extract_audio_features(wav_path):
    banner(f"extract audio labels for {wav_path}")
    folder = os.path.dirname(wav_path)
    with open(wav_path, "rb"):  # the real extractor crashes without its input too
        pass
    for name in ("aud.npy", "aud_ds.npy"):
        with open(os.path.join(folder, name), "w") as handle:
            handle.write(PLACEHOLDER.format(what="no DeepSpeech features [T,16,29] were computed"))
    banner("extracted audio labels")


def extract_images(path, ori_imgs_dir):
    banner(f"extract images from {path} to {ori_imgs_dir}")
    pattern = os.path.join(ori_imgs_dir, "%d.jpg")
    ffmpeg("-i", path, "-vf", f"fps={FPS}", "-qmin", "1", "-q:v", "1", "-start_number", "0", pattern)
    banner("extracted images")


def extract_semantics(ori_imgs_dir, parsing_dir):
    banner(f"extract semantics from {ori_imgs_dir} to {parsing_dir}")
    paths = frame_paths(ori_imgs_dir)
    # One template map the size of the frames, copied for every frame.
    template = os.path.join(parsing_dir, "0.png")
    rgb = {
        "r": f"if({HEAD},255,if({NECK}+{TORSO},0,255))",
        "g": f"if({HEAD},0,if({NECK},255,if({TORSO},0,255)))",
        "b": f"if({HEAD}+{NECK},0,255)",
    }
    geq = ":".join(f"{channel}='{expression}'" for channel, expression in rgb.items())
    ffmpeg("-i", paths[0], "-vf", f"format=rgb24,geq={geq}", "-frames:v", "1", template)
    started = time.monotonic()
    for index, path in enumerate(paths):
        target = os.path.join(parsing_dir, os.path.basename(path).replace(".jpg", ".png"))
        if target != template:
            shutil.copyfile(template, target)
        tqdm_bar(index + 1, len(paths), started)
    banner("extracted semantics")


def extract_background(base_dir, ori_imgs_dir):
    banner(f"extract background image from {ori_imgs_dir}")
    paths = frame_paths(ori_imgs_dir)
    shutil.copyfile(paths[0], os.path.join(base_dir, "bc.jpg"))
    banner("extracted background image")


def extract_torso_and_gt(base_dir, ori_imgs_dir):
    banner(f"extract torso and gt images for {base_dir}")
    paths = frame_paths(ori_imgs_dir)
    started = time.monotonic()
    for index, path in enumerate(paths):
        shutil.copyfile(path, path.replace("ori_imgs", "gt_imgs"))
        tqdm_bar(index + 1, len(paths), started)
    # The frames, with an alpha channel that keeps the template torso and neck (RGBA like the real ones).
    alpha = f"if({TORSO}+{NECK},255,0)"
    geq = f"r='r(X,Y)':g='g(X,Y)':b='b(X,Y)':a='{alpha}'"
    ffmpeg(
        "-start_number", "0", "-i", os.path.join(ori_imgs_dir, "%d.jpg"),
        "-vf", f"format=rgba,geq={geq}", "-start_number", "0", os.path.join(base_dir, "torso_imgs", "%d.png"),
    )  # fmt: skip
    banner("extracted torso and gt images")


def template_landmarks(width, height):
    """68 points in the iBUG layout (jaw, brows, nose, eyes, mouth) of a fixed, made-up face."""
    unit = []
    for i in range(17):  # jaw, left ear to right ear through the chin
        angle = math.pi * i / 16
        unit.append((0.5 - 0.45 * math.cos(angle), 0.35 + 0.55 * math.sin(angle)))
    for start in (0.12, 0.58):  # eyebrows
        unit += [(start + 0.075 * i, 0.26 - 0.03 * math.sin(math.pi * i / 4)) for i in range(5)]
    unit += [(0.5, 0.35 + 0.065 * i) for i in range(4)]  # nose bridge
    unit += [(0.4 + 0.05 * i, 0.62 + 0.02 * (1 - abs(i - 2) / 2)) for i in range(5)]  # nostrils
    for centre in (0.3, 0.7):  # eyes, 6 points each
        unit += [
            (centre + 0.08 * math.cos(math.pi - math.pi * i / 3), 0.38 - 0.03 * math.sin(math.pi * i / 3))
            for i in range(4)
        ]
        unit += [
            (centre + 0.08 * math.cos(math.pi * i / 3), 0.38 + 0.03 * math.sin(math.pi * i / 3))
            for i in (1, 2)
        ]
    for count, rx, ry in ((12, 0.18, 0.07), (8, 0.1, 0.03)):  # outer lips, inner lips
        unit += [
            (0.5 - rx * math.cos(2 * math.pi * i / count), 0.76 - ry * math.sin(2 * math.pi * i / count))
            for i in range(count)
        ]
    box_w, box_h = width * 0.5, height * 0.6
    left, top = (width - box_w) / 2, height * 0.15
    return [(left + x * box_w, top + y * box_h) for x, y in unit]


def extract_landmarks(ori_imgs_dir, fail):
    banner(f"extract face landmarks from {ori_imgs_dir}")
    paths = frame_paths(ori_imgs_dir)
    points = template_landmarks(*frame_size(paths[0]))
    assert len(points) == 68
    lines = "".join(f"{x:f} {y:f}\n" for x, y in points)
    started = time.monotonic()
    tqdm_bar(0, len(paths), started)
    for index, path in enumerate(paths):
        if fail and index == len(paths) // 3:
            # What process.py prints when face_alignment finds no face: get_landmarks returns None.
            sys.stderr.write("\n")
            print("Traceback (most recent call last):", file=sys.stderr)
            print('  File "data_utils/process.py", line 421, in <module>', file=sys.stderr)
            print("    extract_landmarks(ori_imgs_dir)", file=sys.stderr)
            print('  File "data_utils/process.py", line 84, in extract_landmarks', file=sys.stderr)
            print("    if len(preds) > 0:", file=sys.stderr)
            print("TypeError: object of type 'NoneType' has no len()", file=sys.stderr, flush=True)
            sys.exit(1)
        with open(path.replace(".jpg", ".lms"), "w") as handle:
            handle.write(lines)
        tqdm_bar(index + 1, len(paths), started)
    banner("extracted face landmarks")


def face_tracking(base_dir, ori_imgs_dir, fail):
    banner("perform face tracking")
    paths = frame_paths(ori_imgs_dir)
    if fail:
        # A crash of the tracker child (here: the Basel Face Model was never converted). process.py runs it
        # through os.system, so it goes on as if nothing happened.
        print("Traceback (most recent call last):", file=sys.stderr)
        print('  File "data_utils/face_tracking/face_tracker.py", line 40, in <module>', file=sys.stderr)
        print('    os.path.join(dir_path, "3DMM"), id_dim, exp_dim, tex_dim, point_num', file=sys.stderr)
        print(
            "FileNotFoundError: [Errno 2] No such file or directory: "
            "'data_utils/face_tracking/3DMM/3DMM_info.npy'",
            file=sys.stderr,
            flush=True,
        )
    else:
        # face_tracker.py's console (data_utils/face_tracking/face_tracker.py:51–403). The numbers are made
        # up: nothing is fitted.
        print("[INFO] fitting focal length...", flush=True)
        for focal in range(600, 1500, 100):
            print(focal, round(40.0 + abs(focal - DEMO_FOCAL) / 25, 4), -7.0, flush=True)
        print("[INFO] find best focal:", DEMO_FOCAL, flush=True)
        print("[INFO] coarse fitting...", flush=True)
        print(41.2, -7.0, flush=True)
        print("[INFO] fitting light...", flush=True)
        print("[INFO] fine frame-wise fitting...", flush=True)
        batches = int((len(paths) - 1) / TRACKING_BATCH + 1)
        for index in range(batches):
            print(f"{index} of {batches} done", flush=True)
        with open(os.path.join(base_dir, "track_params.pt"), "w") as handle:
            handle.write(PLACEHOLDER.format(what="no face tracking; not a torch archive"))
        print("params saved", flush=True)
    banner("finished face tracking")


def save_transforms(base_dir, ori_imgs_dir):
    banner("save transforms")
    paths = frame_paths(ori_imgs_dir)
    width, height = frame_size(paths[0])
    with open(os.path.join(base_dir, "track_params.pt")):  # torch.load of a missing file crashes the same way
        pass
    count = len(paths)
    split = int(count * 10 / 11)
    pose = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.7], [0.0, 0.0, 0.0, 1.0]]
    for name, ids in (("train", range(0, split)), ("val", range(split, count))):
        transforms = {
            "focal_len": float(DEMO_FOCAL),
            "cx": float(width / 2.0),
            "cy": float(height / 2.0),
            "talkforge_demo": "placeholder: focal length and poses are not tracked",
            "frames": [{"img_id": i, "aud_id": i, "transform_matrix": pose} for i in ids],
        }
        with open(os.path.join(base_dir, f"transforms_{name}.json"), "w") as handle:
            json.dump(transforms, handle, indent=2, separators=(",", ": "))
    banner("finished saving transforms")


def main():
    parser = argparse.ArgumentParser(
        description="Talkforge demo preprocessing (GaussianTalker-shaped, not a model)"
    )
    parser.add_argument("path", help="path to the video: <dir>/<name>/<name>.mp4")
    parser.add_argument("--task", type=int, default=-1, help="-1 means all")
    parser.add_argument(
        "--asr", default="deepspeech", help="accepted for compatibility; nothing is extracted"
    )
    parser.add_argument(
        "--fail_task", type=int, choices=(7, 8), help="demo: simulate a known crash in task 7 or 8"
    )
    args = parser.parse_args()

    base_dir = os.path.dirname(args.path)
    wav_path = os.path.join(base_dir, "aud.wav")
    ori_imgs_dir = os.path.join(base_dir, "ori_imgs")
    parsing_dir = os.path.join(base_dir, "parsing")
    for folder in (
        ori_imgs_dir,
        parsing_dir,
        os.path.join(base_dir, "gt_imgs"),
        os.path.join(base_dir, "torso_imgs"),
    ):
        os.makedirs(folder, exist_ok=True)
    print("[DEMO] talkforge stand-in for data_utils/process.py: real audio and frames, placeholder "
          "landmarks, parsing and tracking", flush=True)  # fmt: skip

    def wanted(task):
        return args.task in (-1, task)

    if wanted(1):
        extract_audio(args.path, wav_path)
    if wanted(2):
        extract_audio_features(wav_path)
    if wanted(3):
        extract_images(args.path, ori_imgs_dir)
    if wanted(4):
        extract_semantics(ori_imgs_dir, parsing_dir)
    if wanted(5):
        extract_background(base_dir, ori_imgs_dir)
    if wanted(6):
        extract_torso_and_gt(base_dir, ori_imgs_dir)
    if wanted(7):
        extract_landmarks(ori_imgs_dir, fail=args.fail_task == 7)
    if wanted(8):
        face_tracking(base_dir, ori_imgs_dir, fail=args.fail_task == 8)
    if wanted(9):
        save_transforms(base_dir, ori_imgs_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
