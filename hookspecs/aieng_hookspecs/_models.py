"""One process-wide lock for building models with transformers, shared by every plugin.

transformers builds a model under process-wide patches (accelerate's
``init_empty_weights`` swaps ``torch.nn.Module.register_parameter`` to put parameters on
the meta device; the default dtype is set and restored), so two builds in two threads —
a pipeline opening a generator and a cross-encoder at once, each in a worker thread —
interleave them: a model's parameters stay on the meta device ("Cannot copy out of meta
tensor") and the patch can outlive both, breaking every later load in the process. And
two threads' first imports of transformers' lazy modules can meet in Python's
import-deadlock detection, which hands one of them a module still being initialized
("cannot import name 'AutoModelForCausalLM'"). A plugin holds :data:`MODEL_BUILD` around
its ``from transformers import ...`` and its ``from_pretrained`` / ``from_config`` calls
(an ONNX export that loads the model too): builds then run one at a time in the process,
whichever plugins make them. It is reentrant: a build may call another under it.
"""

from __future__ import annotations

import threading

__all__ = ["MODEL_BUILD"]

#: Held around every transformers import and model build (see the module docstring).
MODEL_BUILD = threading.RLock()
