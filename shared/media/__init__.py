"""Uploaded bytes -> decoded media, safely: content sniffing (`sniff`), and decoders that
enforce limits and turn every library failure into an error of `shared.errors`
(`image.decode_image`, `audio.decode_audio`, `text.decode_text`); `decoded.DecodedMedia` is an
upload as decoded, for what looks at content (the moderation detectors).

Nothing here is ImageBind-specific; `shared.imagebind` turns decoded media into model
inputs. Submodules import their decoders (Pillow, PyAV) only when used.
"""
