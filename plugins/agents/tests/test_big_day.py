"""The big day: inputs 100x to 1000x larger than usual (replies, memories) stay linear."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from aieng_agents import parse_react
from aieng_hookspecs.types import ToolSpec

CALC = ToolSpec(name="calculate", description="Evaluate arithmetic.",
                parameters={"type": "object", "properties": {"expression": {"type": "string"}},
                            "required": ["expression"]})


def _finishes(code: str, cpu_seconds: int = 20) -> str:
    """Run ``code`` in a fresh interpreter; its output, or a failure when it uses more
    than ``cpu_seconds`` of CPU time (a regular expression backtracking quadratically on
    a long input). CPU time, not wall time: a loaded machine makes the child wait for a
    CPU, not compute more; the wall-clock timeout only catches a hang."""
    # SIGXCPU at the soft limit (at the hard one, the kernel sends SIGKILL).
    limit = f"import resource\nresource.setrlimit(resource.RLIMIT_CPU, ({cpu_seconds}, " \
            f"{cpu_seconds + 10}))\n"
    try:
        done = subprocess.run([sys.executable, "-c", limit + textwrap.dedent(code)],
                              capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("hung for 10 minutes") from exc
    if done.returncode == -signal.SIGXCPU:
        raise AssertionError(f"used more than {cpu_seconds} s of CPU: quadratic?")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_long_run_of_whitespace_in_an_action_input_parses_in_linear_time() -> None:
    """A model stuck on whitespace (a run of 300k spaces inside its Action Input) is parsed
    at once: the code-fence pattern was tried at every space of the run, each try going to
    its end (quadratic: about a minute for 100k spaces)."""
    out = _finishes("""
        from aieng_agents import parse_react
        from aieng_hookspecs.types import ToolSpec
        calc = ToolSpec(name="calculate", description="",
                        parameters={"type": "object",
                                    "properties": {"expression": {"type": "string"}}})
        reply = ("Action: calculate\\nAction Input: {\\"expression\\": \\"2 +"
                 + " " * 300_000 + "2\\"}")
        action = parse_react(reply, (calc,))
        print(len(action.tool_calls[0].arguments["expression"]))
    """)
    assert out.strip() == str(len("2 +") + 300_000 + 1)


def test_fenced_action_inputs_still_lose_their_fences() -> None:
    """The fences around an Action Input (with a language, inline, or alone) are removed
    as before, and backticks inside a value are kept."""
    for given in ('```json\n{"expression": "1 + 1"}\n```', '```{"expression": "1 + 1"}```',
                  '```\n{"expression": "1 + 1"}   \n```  ', '`{"expression": "1 + 1"}`'):
        action = parse_react(f"Action: calculate\nAction Input: {given}", (CALC,))
        assert action.tool_calls[0].arguments == {"expression": "1 + 1"}, given
    action = parse_react('Action: calculate\nAction Input: {"expression": "``` 1 ```"}',
                         (CALC,))
    assert action.tool_calls[0].arguments == {"expression": "``` 1 ```"}
    action = parse_react("Action: calculate\nAction Input: ```\n2 + 2\n```", (CALC,))
    assert action.tool_calls[0].arguments == {"expression": "2 + 2"}
