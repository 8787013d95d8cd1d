#!/usr/bin/env python3
"""Shipped to and run on the GPU node, in the engine's environment (numpy, OpenCV); the platform imports it.

Quality figures: PSNR and SSIM of a rendered validation video against the dataset's ground truth.

Runs standalone on a GPU node (``python -u evaluate.py --video V --data D --output-json O``) inside the
engine's environment — numpy and OpenCV only (the ffmpeg/ffprobe binaries where this OpenCV cannot open
the video), Python 3.8 syntax, no Django — and is importable in the platform as
``avatars.engines.node.evaluate``.

The definition is the original prototype's (its evaluate.py:76–100, docs/engines.md): the i-th decoded render
frame against the i-th val frame ``gt_imgs/<img_id>.jpg`` (the render resized to the ground truth's size with
``cv2.resize``'s default when they differ); PSNR = scikit-image's ``peak_signal_noise_ratio`` on the full
colour 8-bit frames, data range 255; SSIM = scikit-image's ``structural_similarity`` on OpenCV's BGR→gray
frames with its defaults (7×7 uniform window, K1 0.01, K2 0.03, sample covariance, the mean over the windows
that lie wholly inside the frame). tests/avatars/test_evaluation.py proves equality within 1e-6.

Why it is fast: for 8-bit frames the 7×7 window sums of x, y, xy, x² and y² are integers that fit in
int32, so they are computed exactly with OpenCV's box filter, and SSIM is rearranged on those integers
(no float rounding until the last products and division); the work goes in bands of rows small enough
to stay in the CPU cache. Decoding (a thread in OpenCV's VideoCapture, the prototype's own decoder), reading
the ground truth (another thread) and computing overlap, and everything streams: bounded queues, only
per-frame numbers kept.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

import cv2
import numpy as np

WINDOW = 7
K1, K2 = 0.01, 0.03
DATA_RANGE = 255.0
LPIPS_NOTE = "LPIPS not computed: its weights are not available on this node."

_N = WINDOW * WINDOW
_PAD = (WINDOW - 1) // 2
# SSIM's constants scaled to window sums: c1·N² and c2·N(N−1) (the N−1 is the sample covariance).
_C1 = (K1 * DATA_RANGE) ** 2 * _N * _N
_C2 = (K2 * DATA_RANGE) ** 2 * _N * (_N - 1)
_BAND = 48  # rows of windows per band: its dozen arrays (~1.4 MB at 512 wide) stay in the L2 cache
_BOX = {"ksize": (WINDOW, WINDOW), "normalize": False, "borderType": cv2.BORDER_REFLECT}  # edges: unused
_QUEUE_FRAMES = 8  # frames decoded or read ahead of the computation, each way


class EvaluationError(ValueError):
    """The inputs cannot be evaluated; the message names the problem and what to do."""


# --- one frame --------------------------------------------------------------------------------------


def gray(bgr: np.ndarray) -> np.ndarray:
    """OpenCV's BGR→gray, as the original prototype converts its frames before SSIM."""
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """skimage.metrics.peak_signal_noise_ratio(reference, test, data_range=255) for 8-bit frames; inf when
    they are equal. The squared error is an exact integer sum (cv2.norm)."""
    if reference.shape != test.shape:
        raise ValueError(f"Frame sizes differ: {reference.shape} against {test.shape}.")
    squared_error = cv2.norm(_uint8(reference), _uint8(test), cv2.NORM_L2SQR)
    if squared_error == 0:
        return math.inf
    return 10 * math.log10(DATA_RANGE * DATA_RANGE / (squared_error / reference.size))


def ssim(reference_gray: np.ndarray, test_gray: np.ndarray) -> float:
    """skimage.metrics.structural_similarity(reference, test, data_range=255) for 2-D 8-bit frames.

    With window sums Sx, Sy, Sxy, Sxx+Syy over N = 49 pixels, scikit-image's
    ((2·ux·uy + c1)(2·vxy + c2)) / ((ux² + uy² + c1)(vx + vy + c2)) equals
    (2A + c1·N²)(2C + c2·N(N−1)) / ((B + c1·N²)(D + c2·N(N−1))) with A = Sx·Sy, B = Sx² + Sy²,
    C = N·Sxy − A, D = N·(Sxx + Syy) − B — all integers below 2³¹ for 8-bit frames."""
    if reference_gray.ndim != 2 or reference_gray.shape != test_gray.shape:
        raise ValueError(
            f"SSIM needs two grayscale frames of one size, not {reference_gray.shape} and {test_gray.shape}."
        )
    height, width = reference_gray.shape
    if min(height, width) < WINDOW:
        raise ValueError(f"Frames must be at least {WINDOW}×{WINDOW} pixels for SSIM.")
    x, y = _uint8(reference_gray), _uint8(test_gray)
    rows = min(_BAND + 2 * _PAD, height)  # a band: _BAND rows of windows and the rows they reach
    sums = [np.empty((rows, width), np.int32) for _ in range(5)]  # x, y, xy, xx (then xx + yy), yy
    a, b = (np.empty((rows - 2 * _PAD, width), np.int32) for _ in range(2))
    numerator, denominator, scratch = (np.empty((rows - 2 * _PAD, width), np.float64) for _ in range(3))
    product = np.empty((rows, width), np.uint16)
    total = 0.0
    for top in range(0, height - 2 * _PAD, _BAND):
        bottom = min(top + _BAND + 2 * _PAD, height)
        n = bottom - top
        if n != rows:  # the last, shorter band
            sums, product = [array[:n] for array in sums], product[:n]
            a, b, numerator, denominator, scratch = (
                array[: n - 2 * _PAD] for array in (a, b, numerator, denominator, scratch)
            )
        xb, yb = x[top:bottom], y[top:bottom]
        # Window sums, exact. Only the band's inner rows are windows wholly inside the frame: the rest
        # of the work is done on those (whole rows, so the arrays stay contiguous), and the columns
        # within _PAD of the edges are left out of the sum at the end.
        cv2.boxFilter(xb, cv2.CV_32S, dst=sums[0], **_BOX)
        cv2.boxFilter(yb, cv2.CV_32S, dst=sums[1], **_BOX)
        np.multiply(xb, yb, out=product, dtype=np.uint16)
        cv2.boxFilter(product, cv2.CV_32S, dst=sums[2], **_BOX)
        np.multiply(xb, xb, out=product, dtype=np.uint16)
        cv2.boxFilter(product, cv2.CV_32S, dst=sums[3], **_BOX)
        np.multiply(yb, yb, out=product, dtype=np.uint16)
        cv2.boxFilter(product, cv2.CV_32S, dst=sums[4], **_BOX)
        sx, sy, sxy, sq, syy = (array[_PAD : n - _PAD] for array in sums)
        np.add(sq, syy, out=sq)  # Sxx + Syy
        np.multiply(sx, sy, out=a)  # A
        np.multiply(sx, sx, out=b)
        np.multiply(sy, sy, out=syy)
        np.add(b, syy, out=b)  # B
        np.multiply(sxy, _N, out=sxy)
        np.subtract(sxy, a, out=sxy)  # C
        np.multiply(sq, _N, out=sq)
        np.subtract(sq, b, out=sq)  # D
        # (2A + c1·N²)(2C + c2·N(N−1)) = 4 (A + c1·N²/2)(C + c2·N(N−1)/2): the 4 goes on the total.
        np.add(a, _C1 / 2, out=numerator)
        np.add(sxy, _C2 / 2, out=scratch)
        np.multiply(numerator, scratch, out=numerator)
        np.add(b, _C1, out=denominator)
        np.add(sq, _C2, out=scratch)
        np.multiply(denominator, scratch, out=denominator)
        np.divide(numerator, denominator, out=numerator)
        total += 4 * cv2.sumElems(numerator[:, _PAD : width - _PAD])[0]
    return total / ((height - 2 * _PAD) * (width - 2 * _PAD))


def frame_scores(gt_bgr: np.ndarray, render_bgr: np.ndarray) -> tuple[float, float]:
    """(PSNR, SSIM) of one rendered frame against its ground truth, both BGR uint8 of one size."""
    if gt_bgr.shape != render_bgr.shape:
        raise ValueError(f"Frame sizes differ: {gt_bgr.shape} against {render_bgr.shape}.")
    return psnr(gt_bgr, render_bgr), ssim(gray(gt_bgr), gray(render_bgr))


def _uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8:
        raise ValueError(f"Frames must be 8-bit (uint8), not {frame.dtype}.")
    return frame


# --- inputs -----------------------------------------------------------------------------------------


def reference_ids(data_dir: str, split: str = "val") -> list:
    """The split's ``img_id``s in the order of ``transforms_<split>.json``."""
    path = os.path.join(data_dir, f"transforms_{split}.json")
    try:
        with open(path, encoding="utf-8") as handle:
            frames = json.load(handle)["frames"]
        ids = [frame["img_id"] for frame in frames]
    except FileNotFoundError:
        raise EvaluationError(
            f"{path} does not exist: point --data at the dataset folder that preprocessing made."
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EvaluationError(
            f"{path} is not a valid transforms file ({type(error).__name__}: {error}): "
            "it needs a frames list whose entries carry img_id; preprocess the dataset again."
        ) from None
    if not ids:
        raise EvaluationError(f"{path} lists no frames: there is no ground truth to compare against.")
    return ids


def _probe(video: str) -> tuple[int, int, int | None]:
    """(width, height, frame count the container declares or None) of the video's first video stream."""
    command = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-of", "json", "-show_entries",
               "stream=width,height,nb_frames:stream_side_data=rotation", video]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise EvaluationError("ffprobe is not installed on this node: install ffmpeg.") from None
    streams = []
    if result.returncode == 0:
        try:
            streams = json.loads(result.stdout).get("streams") or []
        except ValueError:
            streams = []
    if not streams or not streams[0].get("width") or not streams[0].get("height"):
        said = result.stderr.strip().splitlines()[-1:] or ["no video stream"]
        raise EvaluationError(f"The video {video} cannot be read ({said[0]}): render it again.")
    stream = streams[0]
    width, height = int(stream["width"]), int(stream["height"])
    rotation = next((s.get("rotation") for s in stream.get("side_data_list", []) if "rotation" in s), 0)
    if int(rotation or 0) % 180:  # ffmpeg turns the frames upright, as OpenCV does
        width, height = height, width
    declared = stream.get("nb_frames")
    return width, height, int(declared) if str(declared or "").isdigit() and int(declared) > 0 else None


class _Producer(threading.Thread):
    """Runs ``produce(put)`` in a thread, ahead of its consumer by at most ``_QUEUE_FRAMES`` items; an
    exception goes down the queue in its place, and ``END`` follows the last item."""

    END = object()

    def __init__(self, produce, name: str):
        super().__init__(name=name, daemon=True)
        self.items: queue.Queue = queue.Queue(_QUEUE_FRAMES)
        self.stopping = threading.Event()
        self._produce = produce

    def run(self) -> None:
        try:
            self._produce(self._put)
            self._put(self.END)
        except _Stopped:
            pass
        except BaseException as error:  # handed to the consumer, which raises it
            with contextlib.suppress(_Stopped):
                self._put(error)

    def _put(self, item) -> None:
        while True:
            if self.stopping.is_set():
                raise _Stopped
            try:
                self.items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self):
        item = self.items.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        self.stopping.set()
        if self.ident is not None:  # started
            self.join(5)


class _Stopped(Exception):
    pass


def _ground_truth(data_dir: str, ids: list):
    """Reads ``gt_imgs/<img_id>.jpg`` in order, each only when the consumer is within reach of it."""
    folder = os.path.join(data_dir, "gt_imgs")
    if not os.path.isdir(folder):
        raise EvaluationError(f"{folder} does not exist: the dataset has no ground-truth frames.")

    def produce(put):
        for img_id in ids:
            path = os.path.join(folder, f"{img_id}.jpg")
            if not os.path.isfile(path):
                raise EvaluationError(
                    f"The ground-truth frame {path} is missing: preprocess the dataset again."
                )
            frame = cv2.imread(path, cv2.IMREAD_COLOR)
            if frame is None:
                raise EvaluationError(
                    f"The ground-truth frame {path} is corrupted (it does not decode as an image): "
                    "preprocess the dataset again."
                )
            put((img_id, frame))

    return _Producer(produce, "evaluate-ground-truth")


class _FFmpegDecoder:
    """The render's frames, BGR uint8, decoded by an ffmpeg process (rawvideo bgr24 on a pipe) and read
    by a thread: the fallback where this OpenCV cannot open the video."""

    def __init__(self, video: str):
        self.video = video
        width, height, self.declared = _probe(video)
        self.shape = (height, width, 3)
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        command = ["ffmpeg", "-nostdin", "-v", "error", "-i", video, "-map", "0:v:0", "-vsync", "0",
                   "-f", "rawvideo", "-pix_fmt", "bgr24", "-"]  # fmt: skip
        try:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.errors, bufsize=0
            )
        except FileNotFoundError:
            self.errors.close()
            raise EvaluationError("ffmpeg is not installed on this node: install ffmpeg.") from None
        self.frames = _Producer(self._produce, "evaluate-decode")

    def _produce(self, put) -> None:
        size = self.shape[0] * self.shape[1] * 3
        pipe = self.process.stdout
        while True:
            frame = np.empty(self.shape, np.uint8)
            view, filled = memoryview(frame).cast("B"), 0
            while filled < size:
                count = pipe.readinto(view[filled:])
                if not count:
                    break
                filled += count
            if filled < size:
                break  # the end (a partial last frame would be ffmpeg's error, reported below)
            put(frame)
        if self.process.wait() != 0:
            raise EvaluationError(
                f"ffmpeg could not decode {self.video} ({self._stderr()}): render it again."
            )

    def _stderr(self) -> str:
        self.errors.seek(0)
        lines = self.errors.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no message"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.frames.stop()
        self.process.wait()
        self.process.stdout.close()
        self.errors.close()


class _OpenCVDecoder:
    """The render's frames, BGR uint8, from cv2.VideoCapture in a thread: the prototype's decoder (the same
    frames by definition), in-process, so no pipe copies — about 0.6 ms a 512×512 frame less CPU than the
    ffmpeg pipe. OpenCV releases the GIL while it decodes."""

    def __init__(self, capture):
        self.capture = capture
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.declared = count if count > 0 else None
        self.frames = _Producer(self._produce, "evaluate-decode")

    def _produce(self, put) -> None:
        while True:
            ok, frame = self.capture.read()
            if not ok:
                return
            put(frame)

    def close(self) -> None:
        self.frames.stop()
        self.capture.release()


def _opencv_capture(video: str):
    """An opened cv2.VideoCapture of ``video`` through OpenCV's FFmpeg backend, or None.

    One decoding thread (where this OpenCV lets us choose) keeps well ahead of the computation, and
    FFmpeg's frame threading would cost CPU time the computation needs on a small machine."""
    capture = None
    if hasattr(cv2, "CAP_PROP_N_THREADS"):
        with contextlib.suppress(cv2.error, TypeError):
            capture = cv2.VideoCapture(video, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    if capture is None or not capture.isOpened():
        capture = cv2.VideoCapture(video, cv2.CAP_FFMPEG)
    if capture.isOpened():
        return capture
    capture.release()
    return None


def _open_render(video: str):
    if not os.path.isfile(video):
        raise EvaluationError(f"The video {video} does not exist: render the validation split first.")
    capture = _opencv_capture(video)
    return _OpenCVDecoder(capture) if capture is not None else _FFmpegDecoder(video)


# --- the whole video --------------------------------------------------------------------------------


def evaluate(video: str, data_dir: str, split: str = "val", progress=None) -> dict:
    """PSNR and SSIM of ``video`` against ``<data_dir>/gt_imgs`` for the split's frames, streaming.

    ``progress(done, total, psnr_mean, ssim_mean)`` is called once before the first frame (done = 0) and
    after each compared frame; ``total`` is the number of frames expected to be compared. Returns a
    JSON-safe dict (see the module's README section); raises EvaluationError for inputs it cannot use."""
    ids = reference_ids(data_dir, split)
    reference = _ground_truth(data_dir, ids)
    decoder = _open_render(video)
    total = min(len(ids), decoder.declared) if decoder.declared else len(ids)
    per_frame: dict = {"img_id": [], "psnr": [], "ssim": []}
    psnr_sum = ssim_sum = 0.0
    finite = rendered = 0
    resized = None
    try:
        if progress is not None:
            progress(0, total, None, None)
        decoder.frames.start()
        reference.start()
        while True:
            render = decoder.frames.get()
            if render is _Producer.END:
                break
            rendered += 1
            if rendered > len(ids):
                continue  # past the ground truth: only counted
            img_id, truth = reference.get()
            if render.shape != truth.shape:
                resized = resized or (render.shape, truth.shape)
                render = cv2.resize(render, (truth.shape[1], truth.shape[0]))
            frame_psnr, frame_ssim = frame_scores(truth, render)
            per_frame["img_id"].append(img_id)
            per_frame["ssim"].append(frame_ssim)
            ssim_sum += frame_ssim
            if math.isinf(frame_psnr):
                per_frame["psnr"].append(None)
            else:
                per_frame["psnr"].append(frame_psnr)
                psnr_sum += frame_psnr
                finite += 1
            if progress is not None:
                done = len(per_frame["ssim"])
                progress(done, max(total, done), psnr_sum / finite if finite else None, ssim_sum / done)
    finally:
        decoder.close()
        reference.stop()
    if rendered == 0:
        raise EvaluationError(f"The video {video} has no frames: render it again.")
    compared = len(per_frame["ssim"])
    notes = []
    if rendered != len(ids):
        notes.append(
            f"The render has {rendered} frames, the ground truth {len(ids)}: compared the first {compared}."
        )
    if resized:
        (rh, rw, _), (gh, gw, _) = resized
        notes.append(
            f"The render is {rw}×{rh}, the ground truth {gw}×{gh}: render frames were resized to the "
            "ground truth's size (bilinear) before comparing."
        )
    if finite < compared:
        notes.append(
            f"{compared - finite} of {compared} frames equal their ground truth exactly: their PSNR is "
            "infinite, stored as null and left out of the PSNR mean."
        )
    notes.append(LPIPS_NOTE)
    return {
        "psnr": psnr_sum / finite if finite else None,
        "ssim": ssim_sum / compared,
        "frames": compared,
        "rendered_frames": rendered,
        "reference_frames": len(ids),
        "per_frame": per_frame,
        "notes": notes,
        "lpips": None,
    }


# --- command line -----------------------------------------------------------------------------------


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class _Bar:
    """A tqdm-shaped bar on stderr (the platform reads it with avatars.engines.console.BAR), redrawn at
    most five times a second."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.started = time.monotonic()
        self.drawn_at = 0.0
        self.last = None

    def __call__(self, done, total, psnr_mean, ssim_mean) -> None:
        if done == 0:
            print(f"[INFO] ===== evaluate {total} frames =====", flush=True)
        self.last = (done, total, psnr_mean, ssim_mean)
        now = time.monotonic()
        if now - self.drawn_at >= 0.2:
            self.drawn_at = now
            self.draw(*self.last)

    def draw(self, done, total, psnr_mean, ssim_mean) -> None:
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        remaining = _clock((total - done) / rate) if rate > 0 else "?"
        filled = 10 * done // total if total else 10
        line = (
            f"Evaluating: {100 * done // total if total else 100:3d}%|{'#' * filled}{' ' * (10 - filled)}| "
            f"{done}/{total} [{_clock(elapsed)}<{remaining}, {rate:.2f}it/s"
        )
        if done:
            line += f", psnr={'inf' if psnr_mean is None else f'{psnr_mean:.2f}'}, ssim={ssim_mean:.4f}"
        self.stream.write(f"\r{line}]")
        self.stream.flush()

    def close(self, compared: int) -> None:
        if self.last is not None:
            _, _, psnr_mean, ssim_mean = self.last
            self.draw(compared, compared, psnr_mean, ssim_mean)
            self.stream.write("\n")
            self.stream.flush()


def write_json(path: str, result: dict) -> None:
    """Write ``result`` to ``path`` atomically: a reader sees the old file or the whole new one."""
    folder = os.path.dirname(os.path.abspath(path))
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed into place below
        "w", encoding="utf-8", dir=folder, prefix=".evaluate-", suffix=".json", delete=False
    )
    try:
        with handle:
            json.dump(result, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        if os.path.exists(handle.name):
            os.unlink(handle.name)
        raise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="PSNR/SSIM of a rendered video against the ground truth.")
    parser.add_argument("--video", required=True, help="the rendered validation video")
    parser.add_argument(
        "--data", required=True, help="the dataset folder (transforms_<split>.json, gt_imgs/)"
    )
    parser.add_argument("--output-json", required=True, help="where to write the figures")
    parser.add_argument("--split", default="val")
    args = parser.parse_args(argv)
    bar = _Bar()
    try:
        result = evaluate(args.video, args.data, args.split, progress=bar)
        bar.close(result["frames"])
        write_json(args.output_json, result)
    except EvaluationError as error:
        if bar.last is not None:
            sys.stderr.write("\n")
        print(f"[ERROR] {error}", file=sys.stderr, flush=True)
        return 2
    print("PSNR: n/a (every frame equals its ground truth)" if result["psnr"] is None
          else f"PSNR: {result['psnr']:.2f} dB")  # fmt: skip
    print(f"SSIM: {result['ssim']:.4f}")
    print(f"frames: {result['frames']}")
    for note in result["notes"]:
        print(f"[NOTE] {note}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
