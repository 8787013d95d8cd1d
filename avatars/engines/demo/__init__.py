"""The demo plug-in: a CPU stand-in for GaussianTalker with the same contract and console, so the whole
platform runs and is tested on a laptop. Its videos are not a trained model.

``engine.py`` is platform-side; ``node/`` holds the standard-library scripts that are copied to a node and
run there in place of GaussianTalker's process.py, train.py, render.py and DeepSpeech extractor."""

from .engine import Demo

ENGINE = Demo()
