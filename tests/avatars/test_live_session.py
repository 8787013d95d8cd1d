"""The live render session on a node: the demo backend loaded once, sentences rendered as fragmented MP4
streamed piece by piece through the relay (a local node here; tests/chat/test_live.py goes over SSH and
through the turn), poses going on from sentence to sentence, a stop ending the render at once."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from avatars.engines import live
from avatars.engines.node.pose_view import mirror_index
from avatars.engines.registry import engine_for
from gpu_nodes.connections import LocalConnection, NodeError
from gpu_nodes.models import Node
from tests.conftest import wait_for

VAL_FRAMES = 7


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", *args], check=True)


def tone(path: Path, seconds: float, frequency: int = 300, volume: float = 0.5) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency={frequency}:sample_rate=16000:duration={seconds}",
           "-af", f"volume={volume}", "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(path))  # fmt: skip
    return path


def demo_dataset(folder: Path) -> Path:
    """A preprocessed dataset's parts the demo backend reads: the val split and its ground-truth frames,
    each frame a different solid shade so that a pose can be told from the pixels."""
    (folder / "gt_imgs").mkdir(parents=True)
    frames = []
    for index in range(VAL_FRAMES):
        img_id = 100 + index
        shade = 30 * index
        ffmpeg("-f", "lavfi", "-i", f"color=c=0x{shade:02x}{shade:02x}{shade:02x}:s=64x48", "-frames:v", "1",
               str(folder / "gt_imgs" / f"{img_id}.jpg"))  # fmt: skip
        frames.append({"img_id": img_id})
    (folder / "transforms_val.json").write_text(json.dumps({"frames": frames}))
    return folder


def ffprobe(path: Path) -> dict:
    output = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-print_format", "json", "-show_format", "-show_streams",
         str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(output)


@pytest.fixture
def node(tmp_path) -> Node:
    return Node(name="here", kind=Node.Kind.LOCAL, runtime=Node.Runtime.BARE, workdir=str(tmp_path / "node"))


def start_session(conn, node, dataset, *, name="s1", idle=30.0, fps=0.0):
    engine = engine_for("demo")
    command = live.session_command(
        engine=engine, node=node, name=name, config={"source": str(dataset), "fps": fps}, idle_seconds=idle
    )
    for local_path, remote_path in command.scripts:  # none on a local bare node: they run in place
        conn.put(local_path, remote_path)
    process = conn.start(command.argv, marker=f"live-{name}", cwd=command.cwd, env=command.env)
    facts = live.wait_ready(process, timeout=60)
    return command, process, facts


def render_all(link, ident, wav, pose_start, should_stop=lambda: False):
    pieces, arrivals = [], []
    for header, payload in link.render(
        ident=ident, wav=str(wav), pose_start=pose_start, should_stop=should_stop
    ):
        arrivals.append(time.monotonic())
        if "piece" in header:
            pieces.append((header, payload))
        else:
            return pieces, header, arrivals


def test_demo_session_streams_sentences_as_fragmented_mp4(node, tmp_path):
    conn = LocalConnection(node)
    dataset = demo_dataset(tmp_path / "data")
    command, process, facts = start_session(conn, node, dataset, fps=25)
    assert (facts["width"], facts["height"]) == (64, 48) and facts["load_s"] > 0
    assert Path(command.socket + ".ready").exists()
    link = live.open_link(conn, node, command.socket, marker="relay-1")
    try:
        assert link.ask({"op": "ping"}, answer="pong")["renders"] == 0
        first = tone(tmp_path / "one.wav", 1.0)
        pieces, end, arrivals = render_all(link, 1, first, 0)
        assert end["done"] and end["frames"] == 25, end
        # Streamed: the first piece came while the sentence was still rendering (25 fps: about a second).
        assert arrivals[0] < arrivals[-1] - 0.4, (arrivals[0], arrivals[-1])
        assert [h["piece"] for h, _ in pieces] == list(range(len(pieces))) and len(pieces) >= 3
        assert pieces[0][1][4:8] == b"ftyp" and b"moov" in pieces[0][1][:4096]
        clip = tmp_path / "one.mp4"
        clip.write_bytes(b"".join(payload for _, payload in pieces))
        probe = ffprobe(clip)
        video = next(s for s in probe["streams"] if s["codec_type"] == "video")
        audio = next(s for s in probe["streams"] if s["codec_type"] == "audio")
        assert video["codec_name"] == "h264" and video["profile"] == "Constrained Baseline"
        assert video["level"] == 30 and int(video["nb_read_frames"]) == 25
        assert audio["codec_name"] == "aac" and float(probe["format"]["duration"]) == pytest.approx(
            1.0, abs=0.1
        )
        # Between sentences the next one's ffmpeg already runs (StandbyEncoder), waiting for its input.
        wait_for(lambda: len(encoders(facts["pid"])) == 1, timeout=10, message="a standby encoder")
        [standby] = encoders(facts["pid"])
        # The second sentence's poses go on at frame 25 of the ping-pong order (node/pose_view.py): its first
        # frame is val pose mirror_index(25, 7) = 2 (forward 0-6, back 6-0, forward 0-6, back 6, 5, 4, 3, 2…;
        # shade 60), not pose 0 (shade 0).
        second = tone(tmp_path / "two.wav", 0.4)
        pieces, end, _ = render_all(link, 2, second, 25)
        assert end["done"] and end["frames"] == 10
        clip2 = tmp_path / "two.mp4"
        clip2.write_bytes(b"".join(payload for _, payload in pieces))
        pixel = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(clip2), "-frames:v", "1", "-vf", "crop=8:8:4:4",
             "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"], check=True, capture_output=True,
        ).stdout  # fmt: skip
        assert mirror_index(25, VAL_FRAMES) == 2
        assert abs(sum(pixel) / len(pixel) - 60) < 10
        # The second sentence was encoded by that standby, and a new one waits for the third.
        wait_for(lambda: encoders(facts["pid"]) not in ([], [standby]), timeout=10, message="a new standby")
        assert not Path(f"/proc/{standby}").exists()
        [standby] = encoders(facts["pid"])
        assert link.ask({"op": "ping"}, answer="pong")["renders"] == 2
    finally:
        link.close()
    # A new client is served by the same process: the model is not loaded again.
    link = live.open_link(conn, node, command.socket, marker="relay-2")
    try:
        long = tone(tmp_path / "long.wav", 6.0)
        asked = time.monotonic()
        pieces, end, arrivals = render_all(
            link, 3, long, 0, should_stop=lambda: time.monotonic() - asked > 0.6
        )
        assert end.get("stopped") and end["frames"] < 150, end
        assert arrivals[-1] - asked < 2.0  # 6 s of frames at 25 fps would take 6 s
        assert link.ask({"op": "ping"}, answer="pong")["renders"] == 3
        wait_for(lambda: len(encoders(facts["pid"])) == 1, timeout=10, message="a standby after the stop")
        [standby] = encoders(facts["pid"])
        link.send({"op": "close"})
        assert process.wait(10) == 0
    finally:
        link.close()
    assert not Path(command.socket).exists()
    assert not Path(f"/proc/{standby}").exists()  # the session took its standby encoder with it


def encoders(pid: int) -> list[int]:
    """The ffmpeg processes the session ``pid`` has started and not yet reaped."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    found = []
    for child in children:
        try:
            if Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0].endswith(b"ffmpeg"):
                found.append(int(child))
        except OSError:
            continue
    return found


def test_session_ends_after_its_idle_timeout(node, tmp_path):
    conn = LocalConnection(node)
    command, process, _ = start_session(conn, node, demo_dataset(tmp_path / "data"), idle=1.0)
    assert process.wait(10) == 0
    assert "(idle)" in Path(command.socket).with_suffix(".log").read_text()


def test_a_backend_that_cannot_load_says_why(node, tmp_path):
    conn = LocalConnection(node)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NodeError, match="could not load its model.*transforms_val.json"):
        start_session(conn, node, tmp_path / "empty")


def test_relay_to_no_session_fails_with_a_message(node, tmp_path):
    conn = LocalConnection(node)
    link = live.open_link(conn, node, str(tmp_path / "none.sock"), marker="relay-x", wait=0.2)
    with pytest.raises(live.LinkClosed):
        link.ask({"op": "ping"}, answer="pong", timeout=5)
    assert b"no live session" in (link.buffer or b"") or link.process.wait(5) == 3


@pytest.mark.django_db(transaction=True)
def test_a_session_on_an_ssh_node_streams_over_the_pooled_transport(make_ssh_node, ssh_server, tmp_path):
    """The session runs under the SSH login (the loopback sshd's user) and its relay's bytes travel on an
    exec channel of the node's pooled transport: the same pieces, the same playable MP4."""
    from gpu_nodes.connect import connection_for

    node = make_ssh_node(gpus=0)
    folder = ssh_server.user_folder(node.name) / "work"
    dataset = demo_dataset(folder / "data" / "ada")
    wav = tone(folder / "one.wav", 0.6)
    owner = ssh_server.home.stat()
    for path in [folder, *folder.rglob("*")]:
        os.lchown(path, owner.st_uid, owner.st_gid)
    conn = connection_for(node)
    command, process, facts = start_session(conn, node, dataset, name="ssh1")
    assert facts["width"] == 64
    link = live.open_link(conn, node, command.socket, marker="relay-ssh")
    try:
        pieces, end, _ = render_all(link, 7, wav, 3)
        assert end["done"] and end["frames"] == 15
        clip = tmp_path / "ssh.mp4"
        clip.write_bytes(b"".join(payload for _, payload in pieces))
        streams = {s["codec_type"] for s in ffprobe(clip)["streams"]}
        assert streams == {"video", "audio"}
        link.send({"op": "close"})
        assert process.wait(10) == 0
    finally:
        link.close()
