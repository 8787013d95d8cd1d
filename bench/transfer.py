"""File transfer: ``SSHConnection.put``/``get`` of a 200 MB file to and from a loopback sshd, beside
OpenSSH's ``scp`` in the same run.

Run from the repository root with PostgreSQL and Redis up (as root: the sshd logs in the ``tfssh`` user,
as in the test suite): ``.venv/bin/python bench/transfer.py``.

Setup: an OpenSSH server on a free loopback port (``_harness.LoopbackSSHD``: the suite's config, a
throwaway host key, key login as ``tfssh``), an SSH node on it (registered and confirmed as a staff user
would), a ``--megabytes`` file of random bytes in this run's temp folder under /tmp, and a folder of
tfssh's home as the remote side. Both files stay in the page cache (the machine has the memory), so
the disk is not what is measured.

Each repetition (``--repetitions``) moves the file once each way with ours and with scp, alternating
which goes first; the destination is removed before every copy (outside the timing).
- ours: ``put`` (make_dirs, df, stat, local SHA-256, ``cat > .name.part`` over an exec channel, remote
  ``sha256sum``, ``mv``) and ``get`` (stat, remote ``sha256sum``, ``tail -c +1`` over an exec
  channel, local SHA-256, rename), on the pooled transport (opened during the warm-up);
- scp: ``scp -q -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=<pinned>
  -i <key> -P PORT`` (OpenSSH 9's scp speaks SFTP; a new connection each time, which costs ~0.2 s here).

Throughput = megabytes / wall seconds of the whole call, median per direction. The time inside our
calls is split into local hashing, remote hashing (the ``sha256sum`` round trip), moving bytes (the
``cat``/``tail`` channel) and the rest (the other round trips).

``value`` = our median throughput in our slower direction (MB/s, 10⁶ bytes); ``baseline`` = scp's in
that same direction; ``ratio`` = value / baseline. Target: ratio ≥ 0.9.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

from _harness import Bench, LoopbackSSHD, log, report

PARTS = {"hash_local": "_sha256_file", "hash_remote": "_remote_sha256", "move_up": "_upload_from",
         "move_down": "_download_from"}  # fmt: skip


class Timers:
    """Wall time spent in some of ``gpu_nodes.ssh``'s helpers, patched in this process only."""

    def __init__(self):
        from gpu_nodes import ssh

        self.totals = dict.fromkeys(PARTS, 0.0)
        for part, name in PARTS.items():
            owner = ssh if hasattr(ssh, name) else ssh.SSHConnection
            setattr(owner, name, self._timed(part, getattr(owner, name)))

    def _timed(self, part, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.totals[part] += time.perf_counter() - started

        return wrapper

    def take(self) -> dict[str, float]:
        taken, self.totals = self.totals, dict.fromkeys(PARTS, 0.0)
        return taken


def write_random_file(path, size: int) -> None:
    block = 8 << 20
    with open(path, "wb") as handle:
        for offset in range(0, size, block):
            handle.write(os.urandom(min(block, size - offset)))


def remove(*paths) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    size = args.megabytes * 1_000_000

    with Bench("transfer") as bench, LoopbackSSHD(bench) as sshd:
        from gpu_nodes.ssh import SSHConnection, transport_for

        load = bench.load_at_start
        node = sshd.register_node(f"bench-transfer-{os.getpid()}")
        conn = SSHConnection(node)
        remote_dir = sshd.user_folder("files")
        source = bench.tmp / "source.bin"
        started = time.monotonic()
        write_random_file(source, size)
        log(f"{args.megabytes} MB of random bytes written in {time.monotonic() - started:.1f} s")

        # Warm-up (not timed): the pooled transport, the page cache, and the remote copy to download.
        conn.put(source, str(remote_dir / "down-source.bin"))
        transport = transport_for(node)
        aead = transport.local_cipher.endswith("gcm@openssh.com")  # no separate MAC
        cipher = transport.local_cipher if aead else f"{transport.local_cipher} + {transport.local_mac}"
        timers = Timers()

        scp = ["scp", "-q", *sshd.ssh_options(), "-P", str(sshd.server.port)]
        remote = f"{sshd.server.user}@127.0.0.1:"
        up_ours, up_scp = remote_dir / "up-ours.bin", remote_dir / "up-scp.bin"
        down_ours, down_scp = bench.tmp / "down-ours.bin", bench.tmp / "down-scp.bin"

        def ours_up():
            conn.put(source, str(up_ours))

        def ours_down():
            conn.get(str(remote_dir / "down-source.bin"), down_ours)

        def scp_up():
            subprocess.run([*scp, str(source), f"{remote}{up_scp}"], check=True, timeout=120)

        def scp_down():
            subprocess.run([*scp, f"{remote}{remote_dir / 'down-source.bin'}", str(down_scp)], check=True,
                           timeout=120)  # fmt: skip

        cases = {("ours", "up"): ours_up, ("scp", "up"): scp_up, ("ours", "down"): ours_down,
                 ("scp", "down"): scp_down}  # fmt: skip
        destination = {("ours", "up"): up_ours, ("scp", "up"): up_scp, ("ours", "down"): down_ours,
                       ("scp", "down"): down_scp}  # fmt: skip
        seconds = {key: [] for key in cases}
        parts = []
        started = time.monotonic()
        for repetition in range(args.repetitions):
            # Each direction's pair back to back, ours first on even repetitions, scp first on odd ones.
            order = sorted(cases, key=lambda key: (key[1], (key[0] == "ours") == (repetition % 2 == 1)))
            for key in order:
                remove(up_ours, up_scp, down_ours, down_scp)
                timers.take()
                began = time.perf_counter()
                cases[key]()
                elapsed = time.perf_counter() - began
                seconds[key].append(elapsed)
                landed = destination[key].stat().st_size
                if landed != size:
                    raise RuntimeError(f"{destination[key]} has {landed} bytes, not {size}")
                if key[0] == "ours":
                    parts.append({"direction": key[1], "total": elapsed, **timers.take()})
                log(f"  {key[0]:4s} {key[1]:4s} {args.megabytes / elapsed:7.1f} MB/s ({elapsed:.2f} s)")
        log(f"{args.repetitions} repetitions in {time.monotonic() - started:.1f} s")
        remove(up_ours, up_scp, down_ours, down_scp, source)

    mbps = {key: args.megabytes / statistics.median(values) for key, values in seconds.items()}
    slower = min(("up", "down"), key=lambda direction: mbps[("ours", direction)])
    shares = {}
    for direction in ("up", "down"):
        rows = [row for row in parts if row["direction"] == direction]
        total = sum(row["total"] for row in rows)
        move = sum(row[f"move_{direction}"] for row in rows)
        hashing = sum(row["hash_local"] + row["hash_remote"] for row in rows)
        shares[direction] = {
            "hash_local": round(sum(row["hash_local"] for row in rows) / total, 3),
            "hash_remote": round(sum(row["hash_remote"] for row in rows) / total, 3),
            "moving_bytes": round(move / total, 3),
            "other_round_trips": round((total - move - hashing) / total, 3),
            "moving_bytes_mb_s": round(args.megabytes * len(rows) / move, 1) if move else None,
        }
    for direction, share in shares.items():
        log(f"  ours {direction}: time shares {share}")
    value, baseline = mbps[("ours", slower)], mbps[("scp", slower)]
    report(
        bench="transfer",
        value=round(value, 1),
        unit="MB/s",
        baseline=round(baseline, 1),
        baseline_name=f"openssh_scp_{slower}_median",
        ratio=round(value / baseline, 3),
        target_ratio=0.9,
        metric=f"ssh_put_get_{args.megabytes}MB_{slower}_median_throughput",
        ours_up_mb_s=round(mbps[("ours", "up")], 1),
        ours_down_mb_s=round(mbps[("ours", "down")], 1),
        scp_up_mb_s=round(mbps[("scp", "up")], 1),
        scp_down_mb_s=round(mbps[("scp", "down")], 1),
        ours_time_shares=shares,
        ours_cipher=cipher,
        megabytes=args.megabytes,
        repetitions=args.repetitions,
        load_1m_at_start=load,
        cpus=os.cpu_count(),
    )


if __name__ == "__main__":
    main()
