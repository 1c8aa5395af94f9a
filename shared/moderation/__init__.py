"""Moderation: every upload gets per-category scores, a band per category, `flagged`, and the
reasons, from three kinds of evidence.

- `policy`: the TOML policy (categories, prompts, thresholds), validated on load, versioned
  by content hash; ``default_policy.toml`` ships with the package.
- `zeroshot`: scores in the shared ImageBind space, upload embedding vs prompt embeddings
  (pure); `prompts`: the prompt embeddings cached in Redis per (policy version, checkpoint).
- `blocklist`: operators' known-bad examples, matched by SHA-256 or embedding distance.
- `detectors`: dedicated CPU models (NudeNet for images, a text abuse classifier), each
  optional and imported only where enabled; `join`: how their results meet the embedding.
- `decision`: evidence + policy -> `shared.events.Moderation` (pure); `log`: the
  append-only decision log on a Redis stream.

User documentation: docs/moderation.md.
"""
