#!/usr/bin/env python3
"""Runs a command in a new pseudo-terminal and types a password at its first "Password:" prompt.

pkttyagent, polkit's text agent, reads the password from the controlling terminal only, so the
test needs a terminal that a program can type into. Prints everything the terminal showed, and
exits with the command's exit status (124 when it did not end within the timeout).

    answer-prompt.py TIMEOUT_SECONDS PASSWORD|- COMMAND [ARG...]     (- = never answer)
"""
import os
import pty
import select
import signal
import sys
import termios
import time


def main() -> int:
    timeout, password, command = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
    pid, terminal = pty.fork()
    if pid == 0:
        os.execvp(command[0], command)
    shown = b""
    answered = password == "-"
    deadline = time.monotonic() + timeout
    status = None
    while status is None and time.monotonic() < deadline:
        ready, _, _ = select.select([terminal], [], [], 0.2)
        if ready:
            try:
                data = os.read(terminal, 4096)
            except OSError:  # EIO: nothing holds the terminal any more
                data = b""
            shown += data
            if not answered and b"Password:" in shown:
                # Type only once the agent has turned echo off: it sets the terminal with
                # TCSAFLUSH, which throws away anything typed before.
                echo_off_by = time.monotonic() + 5
                while termios.tcgetattr(terminal)[3] & termios.ECHO and time.monotonic() < echo_off_by:
                    time.sleep(0.02)
                os.write(terminal, password.encode() + b"\n")
                answered = True
        ended, code = os.waitpid(pid, os.WNOHANG)
        if ended:
            status = os.waitstatus_to_exitcode(code)
    # What the command printed last may still be in the terminal.
    while select.select([terminal], [], [], 0.1)[0]:
        try:
            data = os.read(terminal, 4096)
        except OSError:
            break
        if not data:
            break
        shown += data
    # The command's helpers (the agent it started) share its process group: end them too.
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    if status is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        status = 124
    sys.stdout.write(shown.decode(errors="replace"))
    return status

if __name__ == "__main__":
    sys.exit(main())
