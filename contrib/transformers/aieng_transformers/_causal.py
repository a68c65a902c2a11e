"""A loaded causal LM and one request's decoding loop; synchronous, run in worker threads.

The loop is ours rather than ``model.generate``: each step is one forward pass with the
request's own KV cache, so a worker thread can hand every token to the event loop as it
comes, a cancelled request stops after the step in flight, sampling uses the request's own
seeded generator, and log-probabilities come from the same logits that chose the token.
Steps of concurrent requests interleave under the model's lock. A request with a
response schema or a regex decodes through a :class:`~._constrain.Guide`, which picks
only tokens that keep the text a valid prefix.
"""

from __future__ import annotations

import inspect
import math
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import structlog
import torch
from aieng_hookspecs import MODEL_BUILD
from aieng_hookspecs.types import Message, Request, TokenLogprob, Usage

from ._constrain import Guide, constraint_for, marked_texts, token_heads, token_texts
from ._convert import dtype_argument
from ._cpu import warn_if_emulated
from ._sampling import choose, make_generator, penalize
from ._shared import folder_identity, shared
from ._specials import SpecialGuard, marker_pattern, neutralise, special_pattern, special_texts
from ._speculative import Proposer, Speculation
from ._templates import TEMPLATES, ChatTemplate, TemplateName, fold_turns
from ._text import IncrementalDecoder, StopBuffer, clean
from ._toolcalls import (
    ARGS,
    FORMAT_MARKERS,
    MARKER,
    MARKS,
    OPEN,
    TEXT_MARKERS,
    ToolFormat,
    ToolPlan,
    as_text_messages,
    template_messages,
    template_tools,
    tool_plan,
)

__all__ = ["CausalLM", "Generation", "Step", "held_tokens", "wants_logprobs"]

log = structlog.get_logger(__name__)

Finish = Literal["stop", "length"]
# Prompt tokens that seed the incremental decoder, so a first token's leading space
# renders as it would after the prompt.
_CONTEXT_TOKENS = 4
_DEFAULT_WINDOW = 1024
# SentencePiece's byte-fallback tokens, as Llama 2, Mistral and Gemma name them.
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@attrs.frozen
class Step:
    """What one decoding step released.

    :param text: text the stream may show now (may be empty on the last step).
    :param logprob: the summed log-probability of the tokens this step generated, when
        log-probabilities were asked for.
    :param finish: ``stop`` or ``length`` on the last step, else ``None``.
    """

    text: str
    logprob: float | None = None
    finish: Finish | None = None


def held_tokens(tokenizer: Any, vocabulary: dict[str, int] | None = None) -> frozenset[int]:
    """The ids after which a stream releases no text yet (``IncrementalDecoder``'s
    ``hold``): SentencePiece's byte-fallback tokens (``<0xE2>``), whose run a later byte
    token can still turn into U+FFFD, and the special tokens, which decoding skips so that
    a run goes on across them.

    :param vocabulary: the tokenizer's ``get_vocab()``, when the caller has it.
    """
    vocabulary = tokenizer.get_vocab() if vocabulary is None else vocabulary
    held = {index for token, index in vocabulary.items() if _BYTE_TOKEN.fullmatch(token)}
    held.update(int(i) for i in getattr(tokenizer, "all_special_ids", ()))
    return frozenset(held)


def wants_logprobs(request: Request) -> bool:
    """Whether ``request`` asks for per-token log-probabilities:
    ``metadata["logprobs"]`` true (absent, ``None`` or false: no).

    :raises ValueError: for a value that is not a boolean (the string ``"false"`` would
        ask for them by its truthiness).
    """
    wanted = request.metadata.get("logprobs")
    if wanted is None or isinstance(wanted, bool):
        return bool(wanted)
    raise ValueError(f"metadata['logprobs'] must be true or false, got {wanted!r:.40}")


class CausalLM:
    """A causal language model with its tokenizer and chat format.

    :param model: the ``transformers`` causal LM, in eval mode on its device.
    :param tokenizer: its tokenizer.
    :param template: ``auto`` (the tokenizer's own chat template, ChatML when it has none)
        or the name of a built-in template.
    """

    def __init__(self, model: Any, tokenizer: Any, *, template: TemplateName = "auto") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.lock = threading.Lock()
        # Encoding may reconfigure a fast tokenizer (truncation, padding) and two threads
        # doing that at once fail with "Already borrowed"; encoding is cheap, so serialize.
        self._encoding = threading.Lock()
        # A transformers model's device, or that of its first weight; a model-like object
        # without weights (a runtime session behind the same call) says it itself.
        device = getattr(model, "device", None)
        self.device: torch.device = (device if isinstance(device, torch.device)
                                     else next(model.parameters()).device)
        limit = getattr(model.config, "max_position_embeddings", None)
        self.context_length: int | None = limit if isinstance(limit, int) else None
        self.template: ChatTemplate | None = None
        #: see ``SmolLM2Options.repetition_penalty`` (1.0: off).
        self.repetition_penalty = 1.0
        #: Speculative decoding of greedy requests (``None``: one token per pass).
        self.speculation: Speculation | None = None
        self._tool_format: ToolFormat = "hermes"
        # Mistral's marker tokens the tokenizer has, each as one token: text → id (looked
        # up once: a vocabulary of 131k entries is a dict built per lookup)
        vocabulary = tokenizer.get_vocab()
        #: Ids after which a stream releases no text yet (:func:`held_tokens`).
        self.held = held_tokens(tokenizer, vocabulary)
        # The special tokens' texts, which the conversation's text may not turn into
        # tokens (:meth:`encode_prompt`).
        self._specials = special_pattern(tokenizer)
        self._special_texts = special_texts(tokenizer)
        # The tool format's block markers and the built-in template's turn markers that
        # are no special token (those are the guard's), which the conversation's text may
        # not write (set with the format).
        self._neutral: re.Pattern[str] | None = None
        self._markers: dict[str, int] = {
            marker: int(tokenizer.convert_tokens_to_ids(marker))
            for marker in MARKS if marker in vocabulary}
        #: The marker tokens of the Mistral format in use, id → text: decoding keeps their
        #: text (the calls are read by it) where it skips other special tokens.
        self.kept: dict[int, str] = {}
        self._folds_logged = False
        if template != "auto":
            self.template = TEMPLATES[template]
        elif not getattr(tokenizer, "chat_template", None):
            log.info("chat_template.fallback", template="chatml",
                     reason="the tokenizer has no chat template")
            self.template = TEMPLATES["chatml"]
        self.tool_format = self.template_tool_format or "hermes"
        self.stop_ids, self.stop_strings = self._stops()
        # Passes that need the last position(s) only say so when the model takes it, so
        # the output head (the largest product of a small model's prompt pass) skips the
        # rest of the prompt.
        call = getattr(model, "forward", None) or model.__call__
        parameters = inspect.signature(call).parameters
        self._keeps = "logits_to_keep" in parameters
        #: Whether the model takes ``position_ids`` (a batch's left-padded rows need
        #: them; ALiBi models such as BLOOM take positions from the mask and refuse them).
        self.takes_positions = "position_ids" in parameters
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tokenizer.eos_token_id
        #: The id left-padding a batch's shorter prompts (masked out of attention).
        self.pad_id: int = int(pad) if pad is not None else 0
        self._slides = _sliding_cache(model)

    @classmethod
    def load(cls, folder: Path, *, template: TemplateName = "auto",
             device: str = "cpu", dtype: str = "auto", share: bool = True) -> CausalLM:
        """Load a Hugging Face model folder (local files only).

        :param folder: the folder (``config.json``, weights, tokenizer files).
        :param template: as for the constructor.
        :param device: the torch device.
        :param dtype: ``float32``, ``bfloat16`` or ``float16``; ``auto``: float32 on the
            CPU, the folder's own type elsewhere.
        :param share: the model of this process's other components loading the same
            files at the same dtype and device (``_shared``); false: a private copy.
        """
        target = torch.device(device)
        chosen: Any = getattr(torch, dtype) if dtype != "auto" \
            else torch.float32 if target.type == "cpu" else "auto"
        warn_if_emulated(dtype, target.type, component="causal-lm")
        with MODEL_BUILD:
            from transformers import AutoTokenizer

            tokenizer: Any = AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
                str(folder), local_files_only=True, trust_remote_code=False)

        def build() -> Any:
            with MODEL_BUILD:
                from transformers import AutoModelForCausalLM

                model: Any = AutoModelForCausalLM.from_pretrained(
                    str(folder), local_files_only=True, trust_remote_code=False,
                    **{dtype_argument(): chosen})
            model.to(target)
            model.eval()
            return model

        # One copy of the weights per process (``_shared``): the model is read-only here
        # (a draft cut from it shares its modules, changing none); the tokenizer and
        # everything per call stay this object's.
        key = ("causal-lm", folder_identity(folder), str(chosen), str(target))
        return cls(shared(key, build, share=share), tokenizer, template=template)

    # -- prompts -------------------------------------------------------------------------

    def render(self, messages: Sequence[Message], plan: ToolPlan | None = None) -> str:
        """The prompt text of a conversation, ending where the answer starts.

        With tools (``plan``) or a conversation holding calls and their results, a
        tokenizer template that renders tools in the model's call format
        (:attr:`tool_format`) gets them as ``transformers`` passes them (``tools=``,
        ``tool_calls``); any other template gets them written into the text in that
        format (:func:`~._toolcalls.as_text_messages`).

        The tool format's block markers that are plain text (:data:`~._toolcalls.
        TEXT_MARKERS`: Hermes' ``<tool_call>``, the ``<tool_response>`` tags), and the
        built-in template's turn markers that are (:attr:`~._templates.ChatTemplate.
        markers`: ChatML's on a tokenizer without them as special tokens), written in a
        message or a call's argument are broken by a zero-width joiner
        (:func:`~._specials.neutralise`): only the template's and the format's own
        markers are whole in the prompt.
        """
        tokenizer = self.tokenizer
        messages = neutralise(messages, self._neutral)
        if plan is not None or any(m.tool_calls or m.role == "tool" for m in messages):
            if self.template_tool_format == self.tool_format:
                turns = template_messages(
                    [attrs.evolve(m, content=clean(m.content)) for m in messages],
                    format=self.tool_format)
                return self._apply_template(
                    turns, tools=None if plan is None else template_tools(plan))
            messages = as_text_messages(messages, plan, format=self.tool_format)
        if self.template is not None:
            return self.template.render(
                [attrs.evolve(m, content=clean(m.content)) for m in messages],
                bos=tokenizer.bos_token or "", eos=tokenizer.eos_token or "")
        return self._apply_template(
            [{"role": m.role, "content": clean(m.content)} for m in messages])

    def _apply_template(self, turns: list[dict[str, Any]], **extra: Any) -> str:
        # The tokenizer's template; one that refuses the conversation (a system role, turns
        # of one role in a row: Mistral's, Gemma's) gets it folded as those models expect.
        from jinja2.exceptions import TemplateError

        def apply(conversation: list[dict[str, Any]]) -> str:
            return str(self.tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True, **extra))

        try:
            return apply(turns)
        except TemplateError as error:
            refusal = error
            tried = [turns]
            # Later system notes where they stand, then (a template refusing a user turn
            # after a tool's result: Mistral's v3) every system text up front.
            for folded in (fold_turns(turns), fold_turns(turns, notes_in_place=False)):
                if folded in tried:
                    continue
                tried.append(folded)
                try:
                    text = apply(folded)
                except TemplateError as again:
                    refusal = again
                else:
                    if not self._folds_logged:  # once per model: not every request
                        self._folds_logged = True
                        log.info("chat_template.folded", reason=str(error))
                    return text
        name = getattr(self.model.config, "name_or_path", "") or "the model"
        raise ValueError(
            f"the chat template of {name} refuses this conversation ({refusal}), also with "
            "its system messages folded into user turns and consecutive turns of "
            "one role merged") from refusal

    @property
    def tool_format(self) -> ToolFormat:
        """How the model writes tool calls (``SmolLM2Options.tool_format``): the format of
        the tokenizer's template when it renders tools, else ``hermes``.

        :raises ValueError: when set to a Mistral format for a tokenizer without its
            marker tokens (``[TOOL_CALLS]``; ``mistral-v11``: and ``[ARGS]``).
        """
        return self._tool_format

    @tool_format.setter
    def tool_format(self, format: ToolFormat) -> None:
        kept: dict[int, str] = {}
        if format in FORMAT_MARKERS:
            needed, optional = FORMAT_MARKERS[format]
            missing = [marker for marker in needed if marker not in self._markers]
            if missing:
                raise ValueError(
                    f"tool_format {format!r} needs a tokenizer with the "
                    f"{' and '.join(missing)} token{'s' if len(missing) > 1 else ''} "
                    "(Mistral's own tokenizers have them); this one has not: use 'hermes' "
                    "or 'llama3'")
            kept = {self._markers[m]: m for m in (*needed, *optional) if m in self._markers}
        self._tool_format, self.kept = format, kept
        turns = self.template.markers if self.template is not None else ()
        self._neutral = marker_pattern(marker for marker in (*TEXT_MARKERS[format], *turns)
                                       if marker not in self._special_texts)

    @property
    def template_tool_format(self) -> ToolFormat | None:
        """The call format of the chat template in use when it lists tools itself:
        ``hermes`` for ``<tool_call>`` blocks (Hermes, Qwen 2 / 2.5 / 3, SmolLM3),
        ``llama3`` for bare ``{"name": ..., "parameters": ...}`` calls answered from the
        ``ipython`` role (Llama 3.1 / 3.2 / 3.3), ``mistral`` for ``[TOOL_CALLS]`` and
        ``[AVAILABLE_TOOLS]`` (Mistral 7B v0.3, Nemo, Small 3), ``mistral-v11`` when
        ``[ARGS]`` is there too (Mistral Small 3.1 and later) — a Mistral format only when
        the tokenizer has its marker tokens; ``None`` for a template that does not render
        tools, or a built-in template (``chat_template`` other than ``auto``)."""
        if self.template is not None:
            return None
        source = str(getattr(self.tokenizer, "chat_template", None) or "")
        if "tools" not in source:
            return None
        if OPEN in source:
            return "hermes"
        if MARKER in source and "[AVAILABLE_TOOLS]" in source:
            format: ToolFormat = "mistral-v11" if ARGS in source else "mistral"
            if all(marker in self._markers for marker in FORMAT_MARKERS[format][0]):
                return format
            return None
        if '"parameters": ' in source and "ipython" in source:
            return "llama3"
        return None

    def encode_prompt(self, messages: Sequence[Message],
                      plan: ToolPlan | None = None) -> list[int]:
        """The prompt's token ids (the template supplies any BOS).

        Special tokens come from the chat template (and the tool format's markers) only:
        a special token's text in a message or a tool call's argument is encoded as
        plain text (:class:`~._specials.SpecialGuard`).
        """
        guard = SpecialGuard(self._specials)
        text = self.render(guard.messages(messages), plan)
        with self._encoding:
            ids = guard.encode(self.tokenizer, text)
        if not ids:
            bos = self.tokenizer.bos_token_id
            if bos is None:
                raise ValueError("the prompt renders to no tokens and the tokenizer has no "
                                 "BOS token to start from")
            ids = [bos]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of generated ids: special tokens skipped but the marker tokens of the
        Mistral format in use (:attr:`kept`: the calls are read by them), spaces not
        cleaned up (cleaning would rewrite text already streamed)."""
        kept = self.kept
        if not kept or not any(token in kept for token in ids):
            return str(self.tokenizer.decode(list(ids), skip_special_tokens=True,
                                             clean_up_tokenization_spaces=False))
        parts: list[str] = []
        piece: list[int] = []
        for token in ids:
            if token in kept:
                parts += [self.decode(piece), kept[token]]
                piece = []
            else:
                piece.append(token)
        return "".join([*parts, self.decode(piece)])

    def _stops(self) -> tuple[frozenset[int], tuple[str, ...]]:
        # End-of-sequence ids from the model's config, its generation config and the
        # tokenizer; a template's stop string that is one special token (ChatML's
        # <|im_end|>) becomes an id too, since decoding skips special tokens' text.
        ids: set[int] = set()
        sources = [getattr(self.model.config, "eos_token_id", None),
                   getattr(getattr(self.model, "generation_config", None), "eos_token_id", None),
                   self.tokenizer.eos_token_id]
        for value in sources:
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(v for v in value if isinstance(v, int))
        strings: list[str] = []
        special = set(getattr(self.tokenizer, "all_special_tokens", ()))
        added = set(getattr(self.tokenizer, "get_added_vocab", dict)())
        for stop in self.template.stop if self.template is not None else ():
            if stop in special or stop in added:
                ids.add(int(self.tokenizer.convert_tokens_to_ids(stop)))
            else:
                strings.append(stop)
        return frozenset(ids), tuple(strings)

    # -- generation ----------------------------------------------------------------------

    def start(self, request: Request, *, logprobs: bool = False) -> Generation:
        """Render and tokenize the request; the returned generation decodes step by step.

        :raises ValueError: when the prompt does not fit the model's context, when the
            tokenizer's chat template refuses the conversation even folded
            (:func:`~._templates.fold_turns`), or when the request's ``response_schema``
            / ``metadata["regex"]`` / tools cannot be enforced (an unsupported schema
            keyword, a regex that does not compile, both given, a ``tool_choice`` naming
            no tool).
        """
        plan = tool_plan(request.tools, request.metadata, format=self.tool_format)
        constraint = constraint_for(request.response_schema, request.metadata, plan)
        guide = None
        if constraint is not None:
            if plan is not None and plan.format in FORMAT_MARKERS:
                texts, heads = marked_texts(
                    self.tokenizer, {token: MARKS[text] for token, text in self.kept.items()})
            else:
                texts, heads = token_texts(self.tokenizer), token_heads(self.tokenizer)
            guide = Guide(constraint, texts, self.stop_ids, heads)
        ids = self.encode_prompt(request.messages, plan)
        if self.context_length is not None and len(ids) >= self.context_length:
            raise ValueError(f"the prompt has {len(ids)} tokens; the model's context is "
                             f"{self.context_length} tokens")
        return Generation(self, ids, request, logprobs=logprobs, guide=guide, plan=plan)

    @torch.inference_mode()
    def forward(self, ids: Sequence[int], cache: Any) -> tuple[torch.Tensor, Any]:
        """Logits (float32) of the last position after ``ids``, and the updated cache."""
        with self.lock:
            tensor = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
            out = self.model(input_ids=tensor, past_key_values=cache, use_cache=True,
                             **self.keep(1))
            return out.logits[0, -1].float(), out.past_key_values

    @torch.inference_mode()
    def forward_tail(self, ids: Sequence[int], cache: Any, keep: int) -> tuple[torch.Tensor, Any]:
        """Logits (float32, ``(keep, vocab)``) of the last ``keep`` positions after
        ``ids``, and the updated cache: one pass verifying speculated tokens."""
        with self.lock:
            tensor = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
            out = self.model(input_ids=tensor, past_key_values=cache, use_cache=True,
                             **self.keep(keep))
            return out.logits[0, -keep:].float(), out.past_key_values

    def croppable_cache(self) -> Any:
        """An empty KV cache that speculation may crop to any length; ``None`` where the
        cache the model makes itself on its first pass can be. A transformers model with
        sliding-window layers (Mistral 7B v0.1, Gemma 2 / 3, Qwen2 with
        ``use_sliding_window``) makes one that keeps only the window on those layers and
        refuses to crop once past it; it gets a full ``DynamicCache`` instead (its masks
        still limit attention to the window, so the logits are the same)."""
        if not self._slides:
            return None
        from transformers import DynamicCache

        return DynamicCache()

    def keep(self, count: int) -> dict[str, int]:
        """The argument asking the model for the last ``count`` positions' logits only,
        when its forward takes one (``{}`` otherwise: any other argument may be refused)."""
        return {"logits_to_keep": count} if self._keeps else {}

    # -- scoring -------------------------------------------------------------------------

    @torch.inference_mode()
    def perplexity(self, text: str, *, window: int | None = None) -> float:
        """The model's perplexity on ``text``: exp of the mean negative log-likelihood of
        each token given those before it (the tokenizer's BOS, if it adds one, is context).

        Text longer than ``window`` tokens (default: the model's context, at most 1024) is
        scored in windows overlapping by half, each token scored once with at least half a
        window of context.

        :raises ValueError: when the text has fewer than two tokens, or ``window`` is
            under 2 or past the model's context.
        """
        with self._encoding:
            ids: list[int] = self.tokenizer(clean(text))["input_ids"]
        if len(ids) < 2:
            raise ValueError("perplexity needs a text of at least two tokens")
        context = self.context_length
        if window is None:
            size = min(context or _DEFAULT_WINDOW, _DEFAULT_WINDOW)
        elif window < 2:
            raise ValueError("window must be at least 2 tokens")
        elif context is not None and window > context:
            raise ValueError(f"a window of {window} tokens does not fit the model: its "
                             f"context is {context} tokens")
        else:
            size = window
        stride = max(1, size // 2)
        total, count, scored_to = 0.0, 0, 0
        for begin in range(0, len(ids), stride):
            end = min(begin + size, len(ids))
            chunk = torch.tensor([ids[begin:end]], dtype=torch.long, device=self.device)
            with self.lock:
                logits = self.model(input_ids=chunk, use_cache=False).logits[0].float()
            logprobs = torch.log_softmax(logits[:-1], dim=-1)
            picked = logprobs.gather(1, chunk[0, 1:].unsqueeze(1)).squeeze(1)
            fresh = min(end - max(scored_to, begin + 1), picked.numel())
            total -= float(picked[picked.numel() - fresh:].sum())
            count += fresh
            scored_to = end
            if end == len(ids):
                break
        return math.exp(total / count)


def _sliding_cache(model: Any) -> bool:
    # Whether transformers gives ``model`` a cache with sliding-window layers (its own
    # rule: DynamicCache built from the config); a model that is no torch module (an ONNX
    # Runtime session behind the same call) or a transformers without that rule: no.
    config: Any = getattr(model, "config", None)
    if not isinstance(model, torch.nn.Module) or config is None:
        return False
    try:
        from transformers import DynamicCache

        layers = DynamicCache(config=config).layers
    except (TypeError, ValueError, AttributeError):
        return False
    return any(getattr(layer, "is_sliding", False) for layer in layers)


class Generation:
    """One request's decoding: the KV cache, the sampler, the text released so far.

    :meth:`step` runs forward passes until it has text to release or generation ends;
    call it from a worker thread. :meth:`cancel` makes the next step end at once.
    """

    def __init__(self, lm: CausalLM, prompt: list[int], request: Request, *,
                 logprobs: bool, guide: Guide | None = None,
                 plan: ToolPlan | None = None) -> None:
        self._lm = lm
        #: The constrained-decoding guide (``None``: free text).
        self.guide = guide
        #: The request's tools and choice (``None``: no tools); the text's calls are split
        #: off by whoever builds the completion.
        self.plan = plan
        self._request = request
        self._pending: list[int] = prompt  # ids the next forward pass consumes
        self._cache: Any = None
        self._generator = make_generator(request.seed, lm.device) \
            if request.temperature > 0 else None
        self._decoder = IncrementalDecoder(lm.decode, prompt[-_CONTEXT_TOKENS:],
                                           hold=lm.held)
        self._stops = StopBuffer((*request.stop, *lm.stop_strings))
        self._want_logprobs = logprobs
        self._cancelled = threading.Event()
        self.prompt_tokens = len(prompt)
        self.completion_tokens = 0
        self._generated: set[int] = set()
        self._tokens: list[int] = list(prompt)  # prompt + generated, for proposals
        self._spent: float | None = 0.0 if logprobs else None
        speculation = lm.speculation
        #: Proposes tokens to verify (``None``: one token per forward pass). Only greedy,
        #: unconstrained requests without a repetition penalty speculate.
        self.proposer: Proposer | None = None
        if (speculation is not None and request.temperature <= 0 and guide is None
                and lm.repetition_penalty == 1.0):
            self.proposer = speculation.proposer()
            self._cache = lm.croppable_cache()
        self._max_proposal = speculation.max_proposal if speculation is not None else 0
        #: Forward passes run and proposed tokens accepted (speculation's yield).
        self.passes = 0
        self.accepted = 0
        self.finish: Finish | None = None
        #: Every generated token (end-of-sequence included) with its log-probability
        #: under the model, when log-probabilities were asked for.
        self.logprobs: list[TokenLogprob] = []

    @property
    def pending(self) -> list[int]:
        """The ids the next forward pass consumes (the prompt, then the last token)."""
        return self._pending

    @property
    def generated(self) -> list[int]:
        """The generated ids so far (end-of-sequence included)."""
        return self._tokens[self.prompt_tokens:]

    @property
    def want_logprobs(self) -> bool:
        """Whether log-probabilities are recorded."""
        return self._want_logprobs

    @property
    def usage(self) -> Usage:
        """Token counts so far: the prompt, and every generated token (EOS included)."""
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens)

    def cancel(self) -> None:
        """Stop: the next :meth:`step` returns at once (the one in flight finishes)."""
        self._cancelled.set()

    def step(self) -> Step:
        """Generate until some text can be released or generation ends."""
        if self.finish is not None or self._cancelled.is_set():
            return Step("", None, self.finish or "stop")
        self._spent = 0.0 if self._want_logprobs else None
        limit = self.limit()
        text = ""
        while True:
            chosen = (self._speculate(limit) if self.proposer is not None
                      else [self.choose(self.logits())])
            for token, logits in chosen:
                text, ended = self.take(token, logits, limit, text)
                if ended is not None:
                    return ended
            if text or self._cancelled.is_set():
                return Step(text, self._spent)

    def limit(self) -> int:
        """The most completion tokens this request may generate."""
        limit = self._request.max_tokens
        if self._lm.context_length is not None:
            limit = min(limit, self._lm.context_length - self.prompt_tokens)
        return limit

    def logits(self) -> torch.Tensor:
        """One forward pass over the pending ids: the next position's logits."""
        logits, self._cache = self._lm.forward(self._pending, self._cache)
        self.passes += 1
        return logits

    def choose(self, logits: torch.Tensor) -> tuple[int, torch.Tensor]:
        """The next token from one position's logits (penalty, constraint, sampling or
        greedy, as the request says), with the logits its log-probability comes from: the
        model's own, before the repetition penalty as before temperature."""
        request, lm = self._request, self._lm
        scores = logits
        if lm.repetition_penalty != 1.0 and self._generated:
            scores = penalize(logits, self._generated, lm.repetition_penalty)
        if self.guide is not None:
            token = self.guide.choose(
                scores, temperature=request.temperature, top_k=request.top_k,
                top_p=request.top_p, generator=self._generator,
                left=self.limit() - self.completion_tokens - 1)
        elif self._generator is not None:
            token = choose(scores, temperature=request.temperature, top_k=request.top_k,
                           top_p=request.top_p, generator=self._generator)
        else:
            token = int(torch.argmax(scores).item())
        return token, logits

    def _speculate(self, limit: int) -> list[tuple[int, torch.Tensor]]:
        # Propose, verify the proposal in one pass, keep its prefix the model agrees with
        # plus the model's own next token, and crop the cache to what was kept.
        assert self.proposer is not None
        room = min(self._max_proposal, limit - self.completion_tokens - 1)
        proposal = self.proposer.propose(self._tokens, room) if room > 0 else []
        cached = 0 if self._cache is None else int(self._cache.get_seq_length())
        rows, self._cache = self._lm.forward_tail(
            [*self._pending, *proposal], self._cache, len(proposal) + 1)
        self.passes += 1
        greedy = [int(t) for t in torch.argmax(rows, dim=-1).tolist()]
        agreed = 0
        while agreed < len(proposal) and greedy[agreed] == proposal[agreed]:
            agreed += 1
        self.accepted += agreed
        if agreed < len(proposal):
            self._cache.crop(cached + len(self._pending) + agreed)
        return [(greedy[i], rows[i]) for i in range(agreed + 1)]

    def take(self, token: int, logits: torch.Tensor, limit: int,
             released: str) -> tuple[str, Step | None]:
        """Append one chosen token: count it, score it, feed it to the text; returns the
        text released so far this step and, when generation ends here, the last step."""
        lm = self._lm
        self.completion_tokens += 1
        self._generated.add(token)
        self._tokens.append(token)
        if self._spent is not None:
            logprob = min(0.0, float(torch.log_softmax(logits, dim=-1)[token]))
            self._spent += logprob
            self.logprobs.append(TokenLogprob(
                token=str(lm.tokenizer.decode([token], skip_special_tokens=False)),
                logprob=logprob))
        if token in lm.stop_ids:
            return released, self._end("stop", self._decoder.flush(), released=released)
        self._pending = [token]
        if self.guide is not None:
            self.guide.advance(token)
        text = released + self._stops.feed(self._decoder.push(token))
        if self._stops.stopped:
            return text, self._end("stop", "", released=text)
        if self.guide is not None and self.guide.complete:
            # The document is whole and nothing may follow: no EOS step needed.
            return text, self._end("stop", self._decoder.flush(), released=text)
        if self.completion_tokens >= limit:
            return text, self._end("length", self._decoder.flush(), released=text)
        return text, None

    def _end(self, finish: Finish, rest: str, *, released: str = "") -> Step:
        text = released + self._stops.feed(rest)
        if self._stops.stopped:
            finish = "stop"
        else:
            text += self._stops.flush()
        self.finish = finish
        self._cache = None  # free the KV cache now, not when the stream is collected
        self.proposer = None
        return Step(text, self._spent, finish)
