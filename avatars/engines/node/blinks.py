#!/usr/bin/env python3
"""Shipped to and run on the GPU node, next to the dataset (standard library only).

Blink estimate for GaussianTalker without OpenFace: ``python3 blinks.py <dataset folder>``.

Reads the 68-point landmarks that preprocessing writes (``ori_imgs/<i>.lms``, one "x y" pair per line)
and writes ``au.csv`` with OpenFace's `` AU45_r`` column, using the original prototype's eye-aspect-ratio
rule (its process_withoutopenface.py:169–175, docs/engines.md): EAR below 0.18 → 5.0 (closed), above
0.30 → 0 (open), linear between.
Standard library only: the platform copies this file to the node and runs it next to the data, so
thousands of landmark files never cross the network.
"""

import math
import os
import sys

EAR_CLOSED, EAR_OPEN, AU_CLOSED = 0.18, 0.30, 5.0
HEADER = "frame, timestamp, confidence, success, AU45_r\n"


def eye_aspect_ratio(points):
    """Mean eye aspect ratio of both eyes from 68 (x, y) landmarks (points 36–41 and 42–47)."""

    def one(eye):
        vertical = math.dist(eye[1], eye[5]) + math.dist(eye[2], eye[4])
        horizontal = math.dist(eye[0], eye[3])
        return vertical / (2 * horizontal) if horizontal > 0 else 0.0

    return (one(points[36:42]) + one(points[42:48])) / 2


def au45_from_ear(ear):
    if ear < EAR_CLOSED:
        return AU_CLOSED
    if ear > EAR_OPEN:
        return 0.0
    return AU_CLOSED * (EAR_OPEN - ear) / (EAR_OPEN - EAR_CLOSED)


def au_csv_lines(frames, fps=25):
    """au.csv lines (header first) from one list of 68 (x, y) points per frame, in frame order."""
    yield HEADER
    for index, points in enumerate(frames):
        value = au45_from_ear(eye_aspect_ratio(points))
        yield f"{index + 1}, {index / fps:.3f}, 0.98, 1, {value:.4f}\n"


def read_landmarks(path):
    with open(path) as handle:
        points = [tuple(float(v) for v in line.split()[:2]) for line in handle if line.strip()]
    if len(points) != 68:
        raise ValueError(f"{path}: {len(points)} landmarks instead of 68")
    return points


def main(argv):
    if len(argv) != 2:
        print("usage: blinks.py <dataset folder with ori_imgs/>", file=sys.stderr)
        return 2
    folder = argv[1]
    images = os.path.join(folder, "ori_imgs")
    numbers = sorted(int(name[:-4]) for name in os.listdir(images) if name.endswith(".lms"))
    if not numbers or numbers != list(range(len(numbers))):
        print(f"[ERROR] {images} must hold 0.lms … N.lms without gaps", file=sys.stderr)
        return 1
    frames = (read_landmarks(os.path.join(images, f"{n}.lms")) for n in numbers)
    partial = os.path.join(folder, ".au.csv.part")
    with open(partial, "w") as out:
        out.writelines(au_csv_lines(frames))
    os.replace(partial, os.path.join(folder, "au.csv"))
    print(f"[INFO] wrote au.csv for {len(numbers)} frames (eye-aspect-ratio estimate)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
