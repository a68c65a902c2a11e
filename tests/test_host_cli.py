"""``aieng`` in a host's shell scripts: its output piped to a reader that stops early
(``aieng hooks | head -1``), its input closed (``<&-``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: The real console script, as a script starts it.
AIENG = str(Path(sys.executable).with_name("aieng"))


@pytest.mark.parametrize("args", [("hooks",), ("hooks", "--json"), ("--version",)],
                         ids=["rich-table", "json", "version"])
def test_a_reader_that_went_away_exits_141_quietly(args: tuple[str, ...]) -> None:
    """Standard output a pipe whose reader has gone (``| head -1`` once it read its line):
    no traceback, nothing on stderr, and the status shells give a program a broken pipe
    stopped (128 + SIGPIPE), not 1, which a script reads as a failure (rich's tables, click's
    echo and the ``--version`` option all exited 1)."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        done = subprocess.run([AIENG, *args], stdout=write, stderr=subprocess.PIPE,
                              timeout=60, check=False,
                              env={**os.environ, "AIENG_PLUGINS": "builtin"})
    finally:
        os.close(write)
    assert (done.returncode, done.stderr.decode("utf-8", "replace")) == (141, "")


def test_chat_with_standard_input_closed_is_a_usage_error(tmp_path: Path) -> None:
    """``aieng chat PIPELINE <&-`` (a script that closed its input) said ``aieng: error:
    AttributeError: 'NoneType' object has no attribute 'isatty'`` and exited 1; it is a
    usage error saying what is missing, as ``aieng run PIPELINE -`` says it."""
    (tmp_path / "chat.toml").write_text('[pipeline]\nname = "c"\n'
                                        '[components.llm]\nuse = "extractive"\n')
    done = subprocess.run(["sh", "-c", 'exec "$0" "$@" <&-', AIENG, "chat", "chat.toml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "AIENG_PLUGINS": "builtin"})
    assert done.returncode == 2, done.stderr
    assert "standard input is closed" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
