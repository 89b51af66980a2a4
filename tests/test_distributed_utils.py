"""The launcher helper of the distributed tests retries environmental failures once, and only those."""

import sys

import pytest

from .distributed_utils import free_port, run_command


# Fails with `message` on stderr the first time (a marker file remembers it), succeeds after; echoes its arguments.
FLAKY = """
import os, sys
marker, message = sys.argv[1], sys.argv[2]
print("args", *sys.argv[3:], "MASTER_PORT", os.environ["MASTER_PORT"])
if not os.path.exists(marker):
    open(marker, "w").close()
    print(message, file=sys.stderr)
    sys.exit(1)
"""


def test_a_port_collision_is_retried_on_a_fresh_port(tmp_path):
    port = free_port()
    with pytest.warns(UserWarning, match="transient launch error"):
        stdout, _ = run_command(
            [
                sys.executable,
                "-c",
                FLAKY,
                str(tmp_path / "m"),
                "OSError: [Errno 98] Address already in use",
                str(port),
            ],
            port,
        )
    retried_port = stdout.split()[1]
    assert retried_port != str(port) and stdout.split()[-1] == retried_port  # argument and MASTER_PORT both moved


def test_a_worker_abort_is_retried_once(tmp_path):
    port = free_port()
    with pytest.warns(UserWarning, match="transient launch error"):
        run_command([sys.executable, "-c", FLAKY, str(tmp_path / "m"), "Signal 6 (SIGABRT) received", "x"], port)


def test_other_failures_are_not_retried(tmp_path):
    marker = tmp_path / "m"
    with pytest.raises(AssertionError, match="exited with 1"):
        run_command([sys.executable, "-c", FLAKY, str(marker), "ValueError: a real bug", "x"], free_port())
    assert marker.exists()  # it ran once and would have passed on a retry: no retry happened
