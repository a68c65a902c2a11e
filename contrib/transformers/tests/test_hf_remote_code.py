"""A model folder's own Python code (``auto_map`` in its config) never runs: loading it
fails with transformers' message, without asking on stdin (where a piped ``y`` would
have been taken for the user's consent)."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest
from _tiny import random_llama, tiny_bert
from aieng_transformers import MiniLMEmbedder, MiniLMOptions
from aieng_transformers._causal import CausalLM


def _plant(folder: Path, base: str, head: str) -> Path:
    """Give ``folder``'s config custom code that writes ``PWNED`` beside it when imported."""
    marker = folder / "PWNED"
    code = (f"open({str(marker)!r}, 'w').write('ran')\n"
            f"from transformers import {base}Config, {base}Model, {head}\n"
            f"class EvilConfig({base}Config):\n    model_type = 'evil'\n"
            f"class EvilModel({base}Model):\n    config_class = EvilConfig\n"
            f"class EvilLM({head}):\n    config_class = EvilConfig\n")
    (folder / "evil.py").write_text(code, encoding="utf-8")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["model_type"] = "evil"
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel",
                          "AutoModelForCausalLM": "evil.EvilLM"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return marker


@pytest.fixture
def consent_on_stdin(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Whatever reads stdin gets ``y`` (a pipe into the process); the prompts are kept."""
    asked: list[str] = []

    def answer(prompt: str = "") -> str:
        asked.append(prompt)
        return "y"

    monkeypatch.setattr(builtins, "input", answer)
    return asked


def test_a_causal_lm_folder_with_custom_code_is_refused(
        tmp_path: Path, consent_on_stdin: list[str]) -> None:
    """The code is neither run nor offered: a ``ValueError`` naming trust_remote_code."""
    marker = _plant(random_llama(tmp_path / "model"), "Llama", "LlamaForCausalLM")
    with pytest.raises(ValueError, match="trust_remote_code"):
        CausalLM.load(tmp_path / "model")
    assert not marker.exists()
    assert consent_on_stdin == []


def test_an_encoder_folder_with_custom_code_is_refused(
        tmp_path: Path, consent_on_stdin: list[str]) -> None:
    """Likewise for the embedder's ``path``."""
    folder = tiny_bert(tmp_path / "bert")
    marker = _plant(folder, "Bert", "BertLMHeadModel")
    embedder = MiniLMEmbedder(MiniLMOptions(path=str(folder)))
    with pytest.raises(ValueError, match="trust_remote_code"):
        embedder.load()
    assert not marker.exists()
    assert consent_on_stdin == []
