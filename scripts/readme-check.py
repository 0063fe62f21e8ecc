#!/usr/bin/env python3
"""Runs README.md's set-up and walkthrough blocks as written, in order, in a
fresh clone of this repository, as a new user following the README would.

The set-up block's commands run one by one: the proxy (step 1) runs until it
answers its health check and says how to point an agent at it, then is
stopped with Ctrl-C (SIGINT), as the walkthrough tells the reader to; the
test command (step 2) is skipped, as this check runs inside it. The
walkthrough's blocks then run as one bash script with `set -euo pipefail`,
and their output must show the injected key at the echo server, the
placeholder in curl's echo, the refusals' codes, and nothing left running.

Nothing here touches the user's home: XDG_DATA_HOME points into a scratch
folder. The clone's `target` is kept in target/readme-check between runs.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_COMMAND = "scripts/test.sh"


def blocks_under(readme: str, heading: str) -> list[str]:
    """The ```sh blocks of the section `heading` (up to the next `## `)."""
    start = readme.index(f"\n{heading}\n")
    end = readme.find("\n## ", start + 1)
    section = readme[start : end if end != -1 else len(readme)]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def commands(block: str) -> list[str]:
    """The commands of a block: lines without their comments, joined over
    trailing backslashes."""
    out, current = [], ""
    for line in block.splitlines():
        code = line.split(" #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        if not code and not current:
            continue
        current += code
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        out.append(current.strip())
        current = ""
    return out


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def fail(message: str) -> None:
    print(f"readme-check: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    for port in (8080, 9443):
        if port_open(port):
            fail(f"port {port} is taken; the README's walkthrough needs it")
    scratch = tempfile.mkdtemp(prefix="airlock-readme-")
    clone = os.path.join(scratch, "airlock")
    subprocess.run(["git", "clone", "-q", REPO, clone], check=True)
    # The clone's README: what a new user reads (the last commit).
    readme = open(os.path.join(clone, "README.md")).read()
    setup = blocks_under(readme, "## Set up (two commands)")
    walkthrough = blocks_under(readme, "## A 60-second walkthrough with curl")
    if len(setup) < 1 or len(walkthrough) < 3:
        fail(f"expected the set-up block and three walkthrough blocks, found {len(setup)} and {len(walkthrough)}")
    # The build cache survives between runs; the sources are the clone's.
    cache = os.path.join(REPO, "target", "readme-check")
    os.makedirs(cache, exist_ok=True)
    os.symlink(cache, os.path.join(clone, "target"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRLOCK_")}
    env["XDG_DATA_HOME"] = os.path.join(scratch, "xdg")
    for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        env.pop(k, None)

    try:
        for command in commands(setup[0]):
            print(f"readme-check: set-up: {command}", flush=True)
            if command == TEST_COMMAND:
                print("readme-check: (skipped: this check runs inside it)", flush=True)
                continue
            if command.endswith(" serve"):
                run_until_healthy_then_interrupt(command, clone, env, os.path.join(scratch, "setup-serve.log"))
                continue
            subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=clone, env=env, check=True)

        script = "set -euo pipefail\n" + "\n".join(walkthrough[:3])
        print("readme-check: the walkthrough, as one script", flush=True)
        # Its own process group: whatever it leaves running is found, and
        # stopped, when it ends.
        with open(os.path.join(scratch, "walkthrough.log"), "w+") as log:
            walk = subprocess.Popen(
                ["bash", "-c", script], cwd=clone, env=env, stdout=log, stderr=log, start_new_session=True
            )
            code = walk.wait(timeout=3600)
            left = group_members(walk.pid)
            if left:
                os.killpg(walk.pid, signal.SIGTERM)
            log.seek(0)
            out = log.read()
        print(out[-6000:])
        if code != 0:
            fail(f"the walkthrough exited {code}")
        if left:
            fail(f"the walkthrough left processes running: {left}")
        for expected in [
            "authorization: Bearer sk_live_the_real_key",  # the echo server got the key
            "Bearer AIRLOCK_EXAMPLE_KEY",  # the echo came back scrubbed
            "method_not_allowed",
            "proxy_auth_required",
            "Ready",  # airlock status
        ]:
            if expected not in out:
                fail(f"the walkthrough's output lacks {expected!r}")
        if out.count("sk_live_the_real_key") != out.count("authorization: Bearer sk_live_the_real_key"):
            fail("the real key appears in the walkthrough's output other than at the echo server")
        time.sleep(1)
        for port in (8080, 9443):
            if port_open(port):
                fail(f"the walkthrough left something listening on {port}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("readme-check: the README's set-up and walkthrough work as written")


def group_members(pgid: int) -> list[str]:
    """The processes still alive in process group `pgid` (from /proc)."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        # Fields after the command (which may hold spaces): state, ppid, pgrp.
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and fields[2] == str(pgid):
            alive.append(entry)
    return alive


def run_until_healthy_then_interrupt(command: str, cwd: str, env: dict, log: str) -> None:
    """Starts the long-running `serve` command, waits (through its first,
    cold build) until it answers its health check and has said how to point
    an agent at it, then stops it with SIGINT and expects a clean exit."""
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd, env=env, stdout=out, stderr=out)
    try:
        deadline = time.time() + 3600
        while time.time() < deadline and proc.poll() is None:
            try:
                urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    "http://127.0.0.1:8080/v1/health", timeout=2
                )
                break
            except OSError:
                time.sleep(1)
        said = open(log).read()
        if proc.poll() is not None:
            fail(f"`{command}` exited {proc.returncode}:\n{said[-4000:]}")
        if "Point an agent at it" not in said:
            fail(f"`{command}` did not say how to point an agent at it:\n{said[-4000:]}")
        proc.send_signal(signal.SIGINT)
        if proc.wait(timeout=60) != 0:
            fail(f"`{command}` did not stop cleanly on Ctrl-C:\n{open(log).read()[-4000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()


if __name__ == "__main__":
    main()
