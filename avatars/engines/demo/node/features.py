#!/usr/bin/env python3
"""Shipped to and run on the node, GPU or CPU (standard library only).

Talkforge demo engine: a CPU stand-in for GaussianTalker's
``data_utils/deepspeech_features/extract_ds_features.py``. NOT DeepSpeech: no model runs.

Same arguments (``--input x.wav [--output y.npy]``, output ``x.npy`` by default) and the same input rules
(mono 16 kHz 16-bit PCM WAV, docs/engines.md). It writes a placeholder ``.npy`` *text* file that says it holds
no features and records the shape real features would have: ``[T, 16, 29]``, T = one window per 25-fps frame
(the logits at 50 per second, windows with stride 2). The demo ``render.py`` reads that shape, as the real one
reads the array's. Standard library only, so it can be copied onto any node.
"""

import argparse
import math
import os
import sys
import wave

PLACEHOLDER = "talkforge demo placeholder: {what}. Not produced by the real engine.\n"


def frames_for(samples, rate):
    """The number of 16×29 windows DeepSpeech features have for this audio: one per 25-fps frame."""
    logits = int(round(samples / rate * 50))
    return math.ceil(logits / 2)


def main():
    parser = argparse.ArgumentParser(description="Talkforge demo DeepSpeech features (not a model)")
    parser.add_argument("--input", required=True, help="path to input audio file")
    parser.add_argument("--output", help="path to output file with DeepSpeech features")
    args = parser.parse_args()
    if not os.path.exists(args.input):
        print(f"Exception: Input file/directory doesn't exist: {args.input}", file=sys.stderr)
        return 1
    output = args.output or os.path.splitext(args.input)[0] + ".npy"
    print("[DEMO] talkforge stand-in for extract_ds_features.py: no DeepSpeech model runs", flush=True)
    try:
        with wave.open(args.input, "rb") as audio:
            channels, width, rate = audio.getnchannels(), audio.getsampwidth(), audio.getframerate()
            samples = audio.getnframes()
    except (wave.Error, EOFError) as error:
        print(f"[ERROR] {args.input} is not a PCM WAV file ({error})", file=sys.stderr)
        return 1
    if rate != 16000 or width != 2:
        # The real extractor resamples through np.float (gone from numpy >= 1.24) and casts to int16.
        print(
            f"[ERROR] {args.input} is {rate} Hz, {8 * width}-bit: DeepSpeech features need 16 kHz 16-bit PCM",
            file=sys.stderr,
        )
        return 1
    frames = frames_for(samples, rate)
    print(f"Reading {args.input}: {samples / rate:.2f} s, {channels} channel(s), {rate} Hz", flush=True)
    with open(output, "w") as handle:
        handle.write(PLACEHOLDER.format(what="no DeepSpeech features were computed"))
        handle.write(f"shape: [{frames}, 16, 29]\n")
    print(f"Saved DeepSpeech features (placeholder) {output}: shape ({frames}, 16, 29)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
