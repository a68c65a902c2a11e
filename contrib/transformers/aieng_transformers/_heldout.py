"""The fixed texts a quantizer scores before and after: small, plain, written for aieng.

:data:`HELDOUT_TEXT` is one short paragraph of ordinary English prose (about 150 words,
some 170 tokens for SmolLM2): enough to see a quantized model drift, far too small to rank
models against each other. :data:`HELDOUT_SENTENCES` are eight unrelated sentences an
encoder embeds in full precision and quantized. Neither comes from a public data set, so
no model was trained on them verbatim.
"""

from __future__ import annotations

__all__ = ["HELDOUT_SENTENCES", "HELDOUT_TEXT"]

#: One paragraph a causal LM is scored on (perplexity before and after quantizing).
HELDOUT_TEXT = (
    "On the first cold morning of the year, the baker at the corner of our street opened "
    "her shop an hour earlier than usual. She had noticed that people waiting for the bus "
    "looked tired and hungry, so she set a small table by the window with a kettle, a jar "
    "of honey and a basket of warm rolls. Nobody was asked to pay. At first the neighbours "
    "were puzzled, and a few of them walked past without stopping. By the end of the week, "
    "however, the table had become a meeting place. An old man brought a newspaper to share, "
    "two students left a note thanking her for the bread, and a child drew a picture of the "
    "shop that now hangs above the counter. When spring came, the baker took the table away, "
    "but the people who had met there still stop to talk on their way to work."
)

#: Sentences an encoder embeds in full precision and quantized (mean cosine).
HELDOUT_SENTENCES = (
    "The train to the coast leaves every morning at half past seven.",
    "She repaired the old bicycle with parts from a neighbour's garage.",
    "Heavy rain is expected in the north of the country tomorrow.",
    "The library will stay open late during the exam period.",
    "He planted tomatoes along the fence where the sun is strongest.",
    "A good soup needs time, patience and a little salt.",
    "The committee postponed its decision until the next meeting.",
    "Children in the village learn to swim in the river each summer.",
)
