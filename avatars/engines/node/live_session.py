#!/usr/bin/env python3
"""Shipped to and run on the node, GPU or CPU (standard library and ffmpeg; the backend brings its own).

Talkforge live render session: one long-lived process per (checkpoint, GPU) that loads an engine's model
and audio-feature extractor ONCE, then renders sentence after sentence as fragmented MP4 while the frames
come out of the model.

``--backend FILE``: the engine's backend module (``avatars/engines/<engine>/node/live_backend.py``,
shipped beside this script); its ``Backend(config)`` loads everything at start, and
``backend.frames(wav, pose_start, stop)`` yields raw RGB24 frames (``backend.width × backend.height``).
``--config JSON``: what the backend loads (dataset, model folder, iteration, …).

It listens on the Unix socket ``--socket`` (under the node's workdir), prints ``ready {"load_s": …}`` and
writes ``<socket>.ready`` with the same JSON once the model is loaded, then serves one client at a time
(the platform reaches it through ``live_relay.py``). Requests are JSON lines:

- ``{"op": "render", "id": k, "wav": "<16 kHz mono WAV on the node>", "pose_start": n}``
- ``{"op": "stop"}``: abort the render in flight; answered at once with ``{"op": "stop", "stopped": bool}``
- ``{"op": "ping"}`` → ``{"op": "pong", "load_s": …, "renders": n}``
- ``{"op": "close"}``: the process ends.

Replies are frames: a 4-byte big-endian length, that many bytes of UTF-8 JSON header, then ``size`` bytes of
payload when the header has ``"size"``. A render answers with its fMP4 bytes as ffmpeg writes them
(``{"id": k, "piece": seq, "size": n}`` + bytes; piece 0 begins with the init segment, ftyp+moov), then
``{"id": k, "done": true, "frames": N, "first_frame_s": …, "first_piece_s": …, "render_s": …}`` or
``{"id": k, "error": "…"}`` (``"stopped": true`` after a stop).

Encoding: the frames are piped into one ffmpeg per sentence with the sentence's WAV (the ffmpeg is started
while the previous sentence's work is over, ``StandbyEncoder``), H.264 Constrained
Baseline level 3.0 + AAC-LC (the browser's MIME is ``video/mp4; codecs="avc1.42E01E, mp4a.40.2"``), 25 fps,
a keyframe every 5 frames and a fragment every frame (``FMP4_OUTPUT``).

The process exits after ``--idle-timeout`` seconds without a request, and on ``close``.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import queue
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

FPS = 25
# The wire format (chat/consumers.py, static/js/live_player.js; the tests and bench/barge_in.py encode with
# it too). A fragment is closed every frame's worth of time, 40 ms, not at each keyframe: ffmpeg's mov muxer
# flushes a fragment once it holds -frag_duration (libavformat/movenc.c, mov_write_single_packet), and with
# frames coming at the renderer's pace a fragment per 5-frame GOP kept the first frame ~160 ms in ffmpeg
# (measured: first moof 204 ms after the first frame vs 47 ms, 1 % more bytes). Media Source Extensions need
# a keyframe only where playback starts (each sentence's first frame), so the GOP stays 5 frames for size.
FMP4_OUTPUT = [
    "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-profile:v", "baseline",
    "-level", "3.0", "-pix_fmt", "yuv420p", "-g", "5", "-r", str(FPS),
    "-c:a", "aac", "-ar", "44100", "-ac", "1",
    "-movflags", "empty_moov+default_base_moof", "-frag_duration", str(1_000_000 // FPS),
    "-f", "mp4",
]  # fmt: skip


def encoder_argv(width, height, wav):
    """ffmpeg: raw RGB24 frames on stdin + the sentence's WAV (a file, or ``pipe:N``) → fragmented MP4 on
    stdout."""
    audio = ["-f", "wav", "-i", wav] if wav.startswith("pipe:") else ["-i", wav]
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(FPS),
        "-i", "pipe:0",
        *audio, "-map", "0:v:0", "-map", "1:a:0", *FMP4_OUTPUT, "pipe:1",
    ]  # fmt: skip


class StandbyEncoder:
    """An ffmpeg started before its sentence is known, waiting on its two pipes (frames on stdin, the WAV
    on another descriptor): the next sentence's first piece does not wait for ffmpeg to start (~0.1 s
    here, more on a loaded machine; the init segment itself then comes from the first frame)."""

    def __init__(self, width, height):
        audio_in, self.audio_out = os.pipe()
        try:
            self.process = subprocess.Popen(
                encoder_argv(width, height, f"pipe:{audio_in}"), pass_fds=(audio_in,),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
        except BaseException:
            os.close(self.audio_out)
            raise
        finally:
            os.close(audio_in)

    def usable(self):
        return self.process.poll() is None

    def feed_audio(self, wav):
        """Writes the sentence's WAV into ffmpeg (in a thread: ffmpeg reads it while it reads frames)."""

        def copy():
            pipe = os.fdopen(self.audio_out, "wb")  # closed even when the WAV cannot be read
            with contextlib.suppress(OSError), pipe, open(wav, "rb") as source:
                shutil.copyfileobj(source, pipe)

        threading.Thread(target=copy, daemon=True).start()

    def discard(self):
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            with contextlib.suppress(OSError):
                stream.close()
        with contextlib.suppress(OSError):
            os.close(self.audio_out)


def init_segment_end(data):
    """Where the init segment (the boxes up to and including ``moov``) ends in ``data``; None: not yet."""
    offset = 0
    while offset + 8 <= len(data):
        size = struct.unpack(">I", data[offset : offset + 4])[0]
        kind = data[offset + 4 : offset + 8]
        if size == 1 and offset + 16 <= len(data):
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        if size < 8 or offset + size > len(data):
            return None
        offset += size
        if kind == b"moov":
            return offset
    return None


def load_backend(path, config):
    spec = importlib.util.spec_from_file_location("talkforge_live_backend", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Backend(config)


class Client:
    """One connection: JSON lines in (read by a thread of their own, so a stop is heard mid-render),
    length-prefixed frames out (one writer at a time)."""

    def __init__(self, sock):
        self.sock = sock
        self.lock = threading.Lock()
        self.requests = queue.Queue()
        self.closed = False

    def send(self, header, payload=b""):
        if payload:
            header = {**header, "size": len(payload)}
        data = json.dumps(header).encode()
        with self.lock:
            if self.closed:
                return
            try:
                self.sock.sendall(struct.pack(">I", len(data)) + data + payload)
            except OSError:
                self.closed = True


class Session:
    def __init__(self, backend, load_s, idle_timeout):
        self.backend, self.load_s, self.idle_timeout = backend, load_s, idle_timeout
        self.renders = 0
        self.last_request = time.monotonic()
        self.stop = threading.Event()  # the render in flight must end
        self.rendering = threading.Event()
        self.closing = False
        self.standby = None
        self.prepare_encoder()

    def prepare_encoder(self):
        """The next sentence's ffmpeg, started now while nothing renders."""
        if self.standby is None or not self.standby.usable():
            self.standby = StandbyEncoder(self.backend.width, self.backend.height)

    def close(self):
        if self.standby is not None:
            self.standby.discard()
            self.standby = None

    # -- the connection's reader thread --

    def read_requests(self, client):
        buffer = b""
        while True:
            try:
                data = client.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                client.closed = True
                self.stop.set()  # nobody is left to receive the render
                client.requests.put(None)
                return
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if not line.strip():
                    continue
                self.last_request = time.monotonic()
                try:
                    request = json.loads(line)
                    op = request["op"]
                except (ValueError, KeyError, TypeError):
                    client.send({"error": f"not a request: {line[:200].decode('utf-8', 'replace')}"})
                    continue
                if op == "stop":
                    busy = self.rendering.is_set()
                    if busy:
                        self.stop.set()
                    client.send({"op": "stop", "stopped": busy})
                elif op == "ping":
                    client.send({"op": "pong", "load_s": self.load_s, "renders": self.renders})
                else:
                    client.requests.put(request)

    # -- the main thread: one request after the other --

    def serve(self, client):
        reader = threading.Thread(target=self.read_requests, args=(client,), daemon=True)
        reader.start()
        while True:
            try:
                request = client.requests.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() - self.last_request > self.idle_timeout:
                    return "idle"
                continue
            if request is None:
                return "disconnected"
            if request["op"] == "close":
                client.send({"op": "close"})
                return "close"
            if request["op"] != "render":
                client.send({"error": f"unknown op {request['op']!r}: render, stop, ping or close"})
                continue
            self.render(client, request)
            self.last_request = time.monotonic()

    def render(self, client, request):
        ident = request.get("id")
        wav = request.get("wav")
        try:
            pose_start = int(request.get("pose_start", 0))
        except (TypeError, ValueError):
            pose_start = -1
        if not isinstance(wav, str) or not os.path.isfile(wav) or pose_start < 0:
            client.send(
                {"id": ident, "error": f"render needs an existing wav and a pose_start ≥ 0: {request}"}
            )
            return
        self.stop.clear()
        self.rendering.set()
        started = time.monotonic()
        try:
            result = self._encode(client, ident, wav, pose_start, started)
        except Exception as error:  # the session lives on: the next sentence may render
            result = {"error": f"{type(error).__name__}: {error}"}
        finally:
            self.rendering.clear()
        self.renders += 1
        client.send({"id": ident, **result})
        self.prepare_encoder()

    def _encode(self, client, ident, wav, pose_start, started):
        backend = self.backend
        self.prepare_encoder()  # the one started after the last sentence, or a new one if it died
        standby, self.standby = self.standby, None
        encoder = standby.process
        standby.feed_audio(wav)
        timing = {"frames": 0, "first_frame_s": None}
        failure = []

        def feed():
            try:
                for frame in backend.frames(wav, pose_start, self.stop.is_set):
                    if self.stop.is_set():
                        break
                    if timing["first_frame_s"] is None:
                        timing["first_frame_s"] = round(time.monotonic() - started, 4)
                    encoder.stdin.write(frame)
                    timing["frames"] += 1
            except BrokenPipeError:
                pass
            except Exception as error:
                failure.append(f"{type(error).__name__}: {error}")
                self.stop.set()
            finally:
                with contextlib.suppress(OSError):
                    encoder.stdin.close()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        seq, first_piece, pending = 0, None, b""
        fd = encoder.stdout.fileno()
        while True:
            if self.stop.is_set():
                break
            ready, _, _ = select.select([fd], [], [], 0.05)
            if not ready:
                continue
            data = os.read(fd, 1 << 16)
            if not data:
                break
            if seq == 0:  # piece 0 is the whole init segment (ftyp + moov), as a player needs it first
                pending += data
                if init_segment_end(pending) is None:
                    continue
                data, pending = pending, b""
            if first_piece is None:
                first_piece = round(time.monotonic() - started, 4)
            client.send({"id": ident, "piece": seq}, data)
            seq += 1
        if self.stop.is_set():
            encoder.kill()
        feeder.join(timeout=10)
        returncode = encoder.wait()
        errors = encoder.stderr.read().decode("utf-8", "replace").strip()
        encoder.stdout.close()
        encoder.stderr.close()
        if failure:
            return {"error": f"the backend failed: {failure[0]}"}
        if self.stop.is_set():
            return {"error": "stopped", "stopped": True, "frames": timing["frames"]}
        if returncode != 0:
            return {"error": f"ffmpeg failed (exit {returncode}): {errors[-500:]}"}
        return {
            "done": True, "frames": timing["frames"], "pieces": seq, "first_frame_s": timing["first_frame_s"],
            "first_piece_s": first_piece, "render_s": round(time.monotonic() - started, 4),
        }  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description="Talkforge live render session (runs on the node)")
    parser.add_argument("--socket", required=True, help="the Unix socket to listen on")
    parser.add_argument("--backend", required=True, help="the engine's live_backend.py")
    parser.add_argument("--config", default="{}", help="JSON: what the backend loads")
    parser.add_argument("--idle-timeout", type=float, default=300.0)
    parser.add_argument("--log", default="", help="after ready, output goes here (the platform hangs up)")
    args = parser.parse_args()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the starting connection may go away; the session stays
    started = time.monotonic()
    try:
        backend = load_backend(args.backend, json.loads(args.config))
    except Exception as error:
        print(
            f"[ERROR] the live session could not load its model: {type(error).__name__}: {error}", flush=True
        )
        return 1
    load_s = round(time.monotonic() - started, 3)
    os.makedirs(os.path.dirname(os.path.abspath(args.socket)), exist_ok=True)
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(args.socket)
    os.chmod(args.socket, 0o600)
    server.listen(8)
    facts = {"load_s": load_s, "pid": os.getpid(), "width": backend.width, "height": backend.height}
    with open(args.socket + ".ready", "w") as marker:
        json.dump(facts, marker)
    print(f"ready {json.dumps(facts)}", flush=True)
    if args.log:
        log = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
    session = Session(backend, load_s, args.idle_timeout)
    reason = "idle"
    try:
        while True:
            ready, _, _ = select.select([server], [], [], 1.0)
            if not ready:
                if time.monotonic() - session.last_request > args.idle_timeout:
                    break
                continue
            connection, _ = server.accept()
            session.last_request = time.monotonic()
            client = Client(connection)
            reason = session.serve(client)
            client.closed = True
            connection.close()
            if reason in ("close", "idle"):
                break
    finally:
        session.close()
        server.close()
        for path in (args.socket, args.socket + ".ready"):
            with contextlib.suppress(OSError):
                os.unlink(path)
        print(f"[live] session ends ({reason}) after {session.renders} renders", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
