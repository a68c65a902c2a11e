"""Real sentences of many lengths for the parity tests (imported as ``_onnx_texts``: the
name is unique across the repository's test folders, which a root run imports together)."""

from __future__ import annotations

#: Real sentences of many lengths (one to ~60 tokens), punctuation and non-ASCII included.
SENTENCES = [
    "Hello.",
    "A cat is sitting on the mat.",
    "There is a kitten resting on a rug.",
    "The stock market fell sharply today after the central bank raised interest rates.",
    "Share prices dropped steeply this morning.",
    "How do I write a plugin?",
    "Reciprocal rank fusion merges several ranked lists into one by summing 1 / (k + rank).",
    ("The dispatcher awaits every impl in pluggy's order and re-raises errors with the "
    "plugin's name, its distribution, the hook and a hint on how to fix it."),
    "Zürich, 東京 and São Paulo are large cities.",
    "BM25 scores a document by term frequency, inverse document frequency and length.",
    "Quantization trades a little accuracy for smaller and faster models.",
    "She sells sea shells by the sea shore.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "The mitochondria is the powerhouse of the cell.",
    ("Embeddings map texts to vectors so that similar meanings lie close together; a "
    "dot product of two unit vectors is their cosine, and an index finds the nearest ones "
    "among millions in milliseconds."),
    "I'd like a cup of coffee, please!",
    "Water boils at 100 degrees Celsius at sea level.",
    "The quick brown fox jumps over the lazy dog.",
    "Transformers use self-attention to weigh the tokens of a sequence against each other.",
    "",
    "ok",
    "Numbers like 3.14159 and 2,718 tokenize into several pieces.",
    "A long time ago in a galaxy far, far away, a small band of rebels fought an empire.",
]
