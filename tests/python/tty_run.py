"""Runs a command on a pseudo-terminal, as a person at a terminal would:
waits for PROMPT in its output, types INPUT and Enter, and prints
{"status", "output"} as JSON (output: everything the terminal showed).

Usage: tty_run.py PROMPT INPUT -- ARGV...
"""
import json
import os
import pty
import select
import sys
import time


def main():
    prompt, typed = sys.argv[1], sys.argv[2]
    argv = sys.argv[sys.argv.index("--") + 1:]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    output, sent, deadline = b"", False, time.time() + 20
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        if not sent and prompt.encode() in output:
            os.write(fd, typed.encode() + b"\r")
            sent = True
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"status": os.waitstatus_to_exitcode(status), "typed": sent,
                      "output": output.decode("utf-8", "replace")}))


if __name__ == "__main__":
    main()
