"""ImageBind, checkpoint-compatible with Meta's `imagebind_huge`, in plain PyTorch.

Submodules (import what you need; nothing heavy happens at import time):
`normalize` (constants and input normalisation shared by preprocessing and the model),
preprocessing as pure functions (`image`, `audio`, `text`, with `fbank` and `resample`),
the model (`config`, `layers`, `model`), input checks (`inputs`), checkpoint resolution
(`checkpoint`) and the inference API (`embed`).
"""
