"""``smollm2`` under the agent runner (docs/agents.md): tools offered, a constrained call,
the tool's result rendered into the next turn, an answer; ids and messages round-trip,
and streaming gives the calls generation gives."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from _tiny import CHAIN_TEXT, byte_tokenizer, chain_llama
from _tools import ADD, HERMES, WEATHER, check_calls
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Completion, Delta, Message, Request, ToolCall, ToolResult
from aieng_transformers import GenerationStream, SmolLM2Backend, SmolLM2Options
from aieng_transformers._toolcalls import tool_plan

from aieng_core import Kernel
from aieng_core.agent import Agent, AgentOptions

pytestmark = pytest.mark.anyio

#: Mistral 7B Instruct v0.1's rule: user and assistant only, alternating (a newline after
#: ``[/INST]``, where the chain model starts its text).
STRICT = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}")
_ID = re.compile(r"call_[0-9a-f]{24}")


class Adder:
    """The ``add`` tool and ``get_weather``, as an agent's tool component."""

    def __init__(self) -> None:
        self.calls: list[ToolCall] = []

    @hookimpl
    def aieng_tools(self) -> list[Any]:
        return [ADD, WEATHER]

    @hookimpl
    def aieng_call_tool(self, call: ToolCall) -> ToolResult | None:
        self.calls.append(call)
        if call.name == "add":
            return ToolResult(call.id, f"sum: {call.arguments['a'] + call.arguments['b']} ✓")
        return ToolResult(call.id, f"{call.arguments['city']}: 21°")


class ToolThenAnswer:
    """The backend asked for a call (``tool_choice`` = ``tool``) until a tool result is
    in the conversation, then for text (``none``): an agent's common "force a tool,
    then answer" pattern. Keeps every request it passes on."""

    def __init__(self, backend: SmolLM2Backend, tool: str = "required") -> None:
        self.backend, self.tool = backend, tool
        self.requests: list[Request] = []

    def _asked(self, request: Request) -> Request:
        done = any(m.role == "tool" for m in request.messages)
        request = attrs.evolve(request, metadata={
            **request.metadata, "tool_choice": "none" if done else self.tool})
        self.requests.append(request)
        return request

    @hookimpl
    async def aieng_generate(self, request: Request) -> Completion | None:
        return await self.backend.aieng_generate(self._asked(request))

    @hookimpl
    def aieng_stream(self, request: Request) -> GenerationStream | None:
        return self.backend.aieng_stream(self._asked(request))


@pytest.fixture(scope="module")
def agent_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The chain model (room for a prompt listing tools in bytes) under a template
    without tools (ChatML: the tools are written into the text), Hermes' and a strict
    one that refuses system and ``tool`` turns and turns of one role in a row."""
    return {name: chain_llama(tmp_path_factory.mktemp(name), chat_template=template,
                              max_positions=4096)
            for name, template in (("chatml", None), ("hermes", HERMES), ("strict", STRICT))}


def chain(folder: Path) -> SmolLM2Backend:
    return SmolLM2Backend(SmolLM2Options(path=str(folder)))


@pytest.mark.parametrize("template", ["chatml", "hermes", "strict"])
@pytest.mark.parametrize("tool", ["required", "add"])
async def test_an_agent_calls_a_tool_and_answers(agent_dirs: dict[str, Path], template: str,
                                                 tool: str) -> None:
    """The runner offers the tools; the model's constrained call is a valid ``add`` (or
    any tool under ``required``) call with a fresh id; the tool message answers that id;
    the next turn renders the call and the result (Hermes' template: a ``tool`` turn; the
    others: ``<tool_response>`` text, folded into alternation for the strict template)
    and the model answers it."""
    backend = chain(agent_dirs[template])
    model, tools = ToolThenAnswer(backend, tool), Adder()
    async with Kernel() as kernel:
        pipeline = kernel.compose({"llm": model, "tools": tools})
        agent = Agent(pipeline, AgentOptions(max_steps=3, system="Use the tools."))
        result = await agent.run(Request(messages=(Message("user", "What is 40 + 2?"),),
                                         max_tokens=120))
    assert result.status == "answered", result.reason
    assert result.answer == CHAIN_TEXT
    system, user, called, answered, final = result.messages
    assert (system.role, user.role, final.content) == ("system", "user", CHAIN_TEXT)
    (call,) = called.tool_calls
    assert called.role == "assistant" and called.content == "" and _ID.fullmatch(call.id)
    check_calls(called.tool_calls, (ADD, WEATHER))
    assert tool == "required" or call.name == tool
    assert tools.calls == [call]  # the tool got the very call the model wrote
    assert answered.role == "tool" and answered.tool_call_id == call.id
    assert result.steps[0].action.tool_calls == (call,)
    assert result.steps[0].results[0].call_id == call.id

    first, second = model.requests
    assert {t.name for t in first.tools} == {"add", "get_weather"}
    assert second.messages[-2:] == (called, answered)
    prompt = backend.load().render(second.messages, tool_plan(second.tools, second.metadata))
    assert f'"name": "{call.name}"' in prompt and answered.content in prompt
    if template == "hermes":
        assert f"<|im_start|>tool\n{answered.content}<|im_end|>" in prompt
    else:
        assert f"<tool_response>\n{answered.content}\n</tool_response>" in prompt
    if template == "strict":  # all of the system text ahead of the first user turn
        assert prompt.startswith("<|im_start|>[INST] Use the tools.\n\n")


def random_qwen2(folder: Path) -> Path:
    """A random 2-layer Qwen2 (bias on query, key and value) with the byte tokenizer and
    Hermes' template, as Qwen 2 / 2.5 instruct models render tools."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = byte_tokenizer(HERMES)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("model", ["qwen2", "chain"])
async def test_streamed_calls_are_the_generated_calls(
        agent_dirs: dict[str, Path], tmp_path: Path, model: str) -> None:
    """On a Qwen2-style model and the chain model, a request with tools and a conversation
    holding an earlier call and its result gives, streamed, the calls generation gives
    (same names and arguments; the last delta's ids are ``stream.tool_calls``'); through
    a pipeline's streamed run the completion carries the streamed calls, ids included."""
    earlier = ToolCall(id="call_1", name="add", arguments={"a": 40, "b": 2})
    conversation = (Message("user", "What is 40 + 2, and the weather in Oslo?"),
                    Message("assistant", "", tool_calls=(earlier,)),
                    Message("tool", "42", tool_call_id="call_1"))
    folder = random_qwen2(tmp_path) if model == "qwen2" else agent_dirs["chatml"]
    backend = chain(folder)
    for metadata in ({"tool_choice": "required"},
                     {"tool_choice": "get_weather", "parallel_tool_calls": False}):
        request = Request(messages=conversation, tools=(ADD, WEATHER), max_tokens=150,
                          metadata=metadata)
        completion = await backend.aieng_generate(request)
        assert completion is not None and completion.finish_reason == "tool_calls"
        check_calls(completion.tool_calls, (ADD, WEATHER))
        stream = backend.aieng_stream(request)
        assert stream is not None
        deltas = [delta async for delta in stream]
        assert deltas[-1].tool_calls == stream.tool_calls
        assert [(c.name, c.arguments) for c in stream.tool_calls] == [
            (c.name, c.arguments) for c in completion.tool_calls]
        assert all(_ID.fullmatch(c.id) for c in stream.tool_calls)
        assert "".join(d.text for d in deltas) == completion.text == ""

    async with Kernel() as kernel:
        pipeline = kernel.compose({"llm": backend})
        pieces: list[Delta] = []
        run = await pipeline.run(request, on_delta=pieces.append)
    assert run.completion is not None and run.completion.tool_calls
    assert run.completion.tool_calls == pieces[-1].tool_calls


#: Mistral 7B Instruct v0.3's rules: a system message first only; user turns and
#: assistant turns without calls alternate (calls and results not counted); any other
#: role refused. Tools and calls are rendered in its own format.
MISTRAL_V3 = (
    "{%- if messages[0].role == 'system' %}{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{%- set ns = namespace(index=0) %}{%- for m in loop_messages %}"
    "{%- if m.role == 'user' or (m.role == 'assistant' and not m.tool_calls) %}"
    "{%- if (m.role == 'user') != (ns.index % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must "
    "alternate user/assistant/user/assistant/...') }}{%- endif %}"
    "{%- set ns.index = ns.index + 1 %}{%- endif %}{%- endfor %}"
    "{{- bos_token }}{%- for m in loop_messages %}"
    "{%- if m.role == 'user' %}"
    "{%- if tools and loop.last %}[AVAILABLE_TOOLS] {{ tools | tojson }}[/AVAILABLE_TOOLS]"
    "{%- endif %}[INST] {{ m.content }}[/INST]"
    "{%- elif m.role == 'assistant' and m.tool_calls %}[TOOL_CALLS] ["
    "{%- for c in m.tool_calls %}"
    '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}, '
    '"id": "{{ c.id }}"}{% if not loop.last %}, {% endif %}{%- endfor %}]{{ eos_token }}'
    "{%- elif m.role == 'assistant' %} {{ m.content }}{{ eos_token }}"
    "{%- elif m.role == 'tool' %}[TOOL_RESULTS] {\"content\": {{ m.content | tojson }}, "
    '"call_id": "{{ m.tool_call_id }}"}[/TOOL_RESULTS]'
    "{%- else %}{{- raise_exception('Only user, assistant and tool roles are supported') }}"
    "{%- endif %}{%- endfor %}")


async def test_an_agents_note_after_a_result_under_mistral_rules(tmp_path: Path) -> None:
    """The runner's system note after a tool's result, under a template that takes a
    system message first only and refuses a user turn right after a result (Mistral
    v0.3's): the note cannot stand where it was said, so every system text opens the
    first user turn; calls and results keep their turns and ids, and the model goes on
    from there."""
    from _tiny import random_llama
    from aieng_transformers._toolcalls import MARKER, mistral_id

    folder = random_llama(tmp_path, chat_template=MISTRAL_V3, extra=(MARKER,),
                          max_positions=4096)
    backend = SmolLM2Backend(SmolLM2Options(path=str(folder)))
    lm = backend.load()
    assert lm.tool_format == "mistral"
    call = ToolCall(id="call_0123456789abcdef01234567", name="add",
                    arguments={"a": 40, "b": 2})
    note = "You are repeating yourself."
    conversation = (Message("system", "Use the tools."), Message("user", "40 + 2?"),
                    Message("assistant", "", tool_calls=(call,)),
                    Message("tool", "42", tool_call_id=call.id), Message("system", note))
    plan = tool_plan((ADD,), {"tool_choice": "required"}, format="mistral")
    prompt = lm.render(conversation, plan)
    assert f"[INST] Use the tools.\n\n{note}\n\n40 + 2?[/INST]" in prompt
    assert f'"id": "{mistral_id(call.id)}"' in prompt
    assert f'"call_id": "{mistral_id(call.id)}"}}[/TOOL_RESULTS]' in prompt
    completion = await backend.aieng_generate(Request(
        messages=conversation, tools=(ADD,), max_tokens=80,
        metadata={"tool_choice": "required"}))
    assert completion is not None and completion.finish_reason == "tool_calls"
    check_calls(completion.tool_calls, (ADD,))
