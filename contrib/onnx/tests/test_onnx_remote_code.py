"""An exported folder's config naming its own Python code (``auto_map``) is refused: the
code never runs, and nothing asks on stdin (where a piped ``y`` would be consent)."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest
from aieng_onnx._causal import causal_lm
from aieng_transformers.testing import random_llama


def test_a_folder_with_custom_code_is_refused(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``causal_lm`` fails with transformers' ``trust_remote_code`` message first."""
    folder = random_llama(tmp_path / "model")
    marker = folder / "PWNED"
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import LlamaConfig\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'evil'\n", encoding="utf-8")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.update(model_type="evil", auto_map={"AutoConfig": "evil.EvilConfig"})
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    asked: list[str] = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": asked.append(prompt) or "y")
    with pytest.raises(ValueError, match="trust_remote_code"):
        causal_lm(None, folder)
    assert not marker.exists()
    assert asked == []
