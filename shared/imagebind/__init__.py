"""ImageBind, checkpoint-compatible with Meta's `imagebind_huge`, in plain PyTorch.

Submodules (import what you need; nothing heavy happens at import time):
`constants` (the numbers preprocessing and the model share), preprocessing as pure,
torch-free functions (`image`, `audio`, `text`, with `fbank` and `resample`), `normalize`
(the model-side image normalisation, torch),
the model (`config`, `layers`, `model`), input checks (`inputs`), checkpoint resolution
(`checkpoint`) and the inference API (`embed`).
"""
