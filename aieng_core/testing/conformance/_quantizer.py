"""The conformance suite of the ``quantizer`` role."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

import pytest

from aieng_hookspecs.types import QuantizeResult

from ...pipeline import Pipeline
from .._kit import EventCapture
from ._base import STAGE, RoleSuite, check_valid, optional_fixture

__all__ = ["QuantizerSuite"]


class QuantizerSuite(RoleSuite):
    """Conformance of a quantizer (``aieng_quantize``).

    Subclass it with a ``component`` fixture returning the quantizer, and (to quantize for
    real) the ``model_path`` and ``scheme`` fixtures: a small model it can quantize and a
    scheme it supports::

        class TestMyQuantizer(QuantizerSuite):
            @pytest.fixture
            def component(self, tmp_path) -> MyQuantizer:
                return MyQuantizer(output_dir=tmp_path)

            @pytest.fixture
            def model_path(self, tmp_path) -> str:
                return str(make_tiny_model(tmp_path))

            @pytest.fixture
            def scheme(self) -> str:
                return "int8"

    An unsupported scheme gets ``None``; a supported one a result of that scheme, at the
    place it names, whose measured weights (more than 0 bytes) did not grow.
    """

    role = "quantizer"
    required_hooks = ("aieng_quantize",)
    role_hooks = ("aieng_quantize",)
    #: A scheme no quantizer supports.
    unsupported_scheme: ClassVar[str] = "aieng-conformance-no-such-scheme"

    # -- fixtures ------------------------------------------------------------------------

    @pytest.fixture
    def model_path(self) -> str:
        """A small local model the component can quantize: override to quantize for real."""
        pytest.skip("give a model_path fixture (a small model) to quantize for real")

    @pytest.fixture
    def scheme(self) -> str:
        """A scheme the component supports: override to quantize for real."""
        pytest.skip("give a scheme fixture (one the component supports) to quantize for real")

    @pytest.fixture
    def placeholder_model(self, tmp_path: Path) -> str:
        """A small file standing in for a model where only the scheme matters."""
        path = tmp_path / "placeholder-model.bin"
        path.write_bytes(bytes(range(256)) * 4)
        return str(path)

    # -- calling the hook through the kernel ---------------------------------------------

    async def quantize(self, pipeline: Pipeline, model: str, scheme: str) -> Any:
        """``aieng_quantize`` through the pipeline's dispatcher; ``None`` when unsupported."""
        found = await pipeline.dispatcher.first("aieng_quantize",
                                                {"model": model, "scheme": scheme}, stage=STAGE)
        return None if found is None else found[0]

    def check_result(self, result: object, scheme: str) -> QuantizeResult:
        """A result of the requested scheme whose weights were measured (a model has more
        than 0 bytes of them) and did not grow."""
        assert result is not None, f"aieng_quantize returned None for scheme {scheme!r}"
        assert isinstance(result, QuantizeResult), (
            f"aieng_quantize returned {type(result).__name__}, expected QuantizeResult")
        check_valid(result, "the quantize result")
        assert result.scheme == scheme, f"asked for {scheme!r}, got {result.scheme!r}"
        assert result.size_before > 0 and result.size_after > 0, (
            f"weights of {result.size_before} bytes before and {result.size_after} after: "
            "report the measured sizes of the model's weights")
        assert result.size_after <= result.size_before, (
            f"the weights grew from {result.size_before} to {result.size_after} bytes")
        return result

    # -- tests ---------------------------------------------------------------------------

    async def test_unsupported_scheme_is_not_mine(
        self, conformance_pipeline: Pipeline, placeholder_model: str
    ) -> None:
        """A scheme the quantizer does not support gets None, before touching the model."""
        result = await self.quantize(conformance_pipeline, placeholder_model,
                                     self.unsupported_scheme)
        assert result is None, f"an unsupported scheme got {result!r}, expected None"

    async def test_quantizes_with_its_scheme(
        self, conformance_pipeline: Pipeline, model_path: str, scheme: str
    ) -> None:
        """A supported scheme gives a result of that scheme, no larger than the model, where
        the result says (the given model being local, so is the quantized one)."""
        before = _files(Path(model_path))
        result = self.check_result(
            await self.quantize(conformance_pipeline, model_path, scheme), scheme)
        assert Path(result.model).exists(), (
            f"the quantized model is said to be at {result.model!r}, where nothing is")
        after = _files(Path(model_path))
        changed = sorted(name for name, digest in before.items() if after.get(name) != digest)
        assert not changed, (
            f"quantizing changed or removed the given model's files {changed[:5]}: write the "
            "quantized model elsewhere and leave the input as it is")

    async def test_does_not_block_the_loop(
        self, conformance_pipeline: Pipeline, placeholder_model: str,
        captured_events: EventCapture, request: pytest.FixtureRequest,
    ) -> None:
        """Quantizing (and declining a scheme) never stalls the event loop."""
        model, scheme = optional_fixture(request, "model_path"), \
            optional_fixture(request, "scheme")
        async with self.loop_watch(captured_events):
            await self.quantize(conformance_pipeline, placeholder_model,
                                self.unsupported_scheme)
            if model is not None and scheme is not None:
                await self.quantize(conformance_pipeline, model, scheme)


def _files(path: Path) -> dict[str, str]:
    """A model's files (a file, or every file under a folder) -> the SHA-256 of each."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path) if p != path else p.name):
            hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
