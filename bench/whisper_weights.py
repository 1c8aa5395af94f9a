"""Whisper weights for the speech benchmarks, built offline: the same real weights in
transformers' form as in CTranslate2's, and random-weight CTranslate2 models of each
official size.

- `read_ct2` parses a CTranslate2 `model.bin` (the layout `ctranslate2.specs.ModelSpec`
  writes: version, spec name, revision, named arrays, aliases).
- `ct2_to_transformers` turns a CTranslate2 Whisper conversion (float16/float32, as the
  bundled tiny.en and base are) back into `transformers.WhisperForConditionalGeneration`:
  the inverse of ctranslate2's `WhisperLoader` (fused q/k/v split again; Whisper's k_proj
  has no bias, so its zero slice is dropped). No Hugging Face Hub needed.
- `random_ct2` writes a random-weight CTranslate2 model of an official config (tiny ...
  large-v3) through ctranslate2's own `TransformersConverter`: speed and memory only, its
  words are noise.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np

# ctranslate2's DataType enum order (include/ctranslate2/types.h); bfloat16 is not needed here.
_DTYPES: dict[int, Any] = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}

# The official configs (openai/whisper-*'s config.json), the fields that set compute.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"d_model": 384, "layers": 4, "heads": 6, "mels": 80},
    "base": {"d_model": 512, "layers": 6, "heads": 8, "mels": 80},
    "small": {"d_model": 768, "layers": 12, "heads": 12, "mels": 80},
    "medium": {"d_model": 1024, "layers": 24, "heads": 16, "mels": 80},
    "large-v3": {"d_model": 1280, "layers": 32, "heads": 20, "mels": 128},
}
MULTILINGUAL_VOCAB = 51865  # large-v3 has 51866 (one more language token): not worth a tokenizer


def read_ct2(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(variables, aliases) of a CTranslate2 model.bin."""
    data = path.read_bytes()
    pos = 0

    def unpack(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return int(value)

    def string() -> str:
        nonlocal pos
        size = unpack("H")
        text = data[pos : pos + size - 1].decode()
        pos += size
        return text

    unpack("I")  # binary version
    string()  # spec name
    unpack("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(unpack("I")):
        name = string()
        dims = [unpack("I") for _ in range(unpack("B"))]
        dtype = _DTYPES[unpack("B")]
        nbytes = unpack("I")
        count = nbytes // np.dtype(dtype).itemsize
        variables[name] = np.frombuffer(data, dtype=dtype, count=count, offset=pos).reshape(dims)
        pos += nbytes
    aliases = {string(): string() for _ in range(unpack("I"))}
    return variables, aliases


def _hf_state_dict(ct2: dict[str, np.ndarray], layers: int) -> dict[str, np.ndarray]:
    """transformers' Whisper parameter names -> arrays, from CTranslate2's."""
    out: dict[str, np.ndarray] = {}

    def linear(hf: str, ct: str) -> None:
        out[f"{hf}.weight"] = ct2[f"{ct}/weight"]
        out[f"{hf}.bias"] = ct2[f"{ct}/bias"]

    def norm(hf: str, ct: str) -> None:
        out[f"{hf}.weight"] = ct2[f"{ct}/gamma"]
        out[f"{hf}.bias"] = ct2[f"{ct}/beta"]

    def split(hf: str, ct: str, names: tuple[str, ...]) -> None:
        weights = np.split(ct2[f"{ct}/weight"], len(names))
        biases = np.split(ct2[f"{ct}/bias"], len(names))
        for name, weight, bias in zip(names, weights, biases, strict=True):
            out[f"{hf}.{name}.weight"] = weight
            if name != "k_proj":  # Whisper's keys have no bias; the converter fused zeros
                out[f"{hf}.{name}.bias"] = bias

    for side in ("encoder", "decoder"):
        hf_side = f"model.{side}"
        out[f"{hf_side}.embed_positions.weight"] = ct2[f"{side}/position_encodings/encodings"]
        norm(f"{hf_side}.layer_norm", f"{side}/layer_norm")
        for i in range(layers):
            hf, ct = f"{hf_side}.layers.{i}", f"{side}/layer_{i}"
            split(f"{hf}.self_attn", f"{ct}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
            linear(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
            norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
            if side == "decoder":
                linear(f"{hf}.encoder_attn.q_proj", f"{ct}/attention/linear_0")
                split(f"{hf}.encoder_attn", f"{ct}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{hf}.encoder_attn.out_proj", f"{ct}/attention/linear_2")
                norm(f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
            linear(f"{hf}.fc1", f"{ct}/ffn/linear_0")
            linear(f"{hf}.fc2", f"{ct}/ffn/linear_1")
            norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    out["model.decoder.embed_tokens.weight"] = ct2["decoder/embeddings/weight"]
    out["proj_out.weight"] = ct2["decoder/embeddings/weight"]  # tied, as in Whisper
    return out


def ct2_to_transformers(model_dir: Path) -> Any:
    """`WhisperForConditionalGeneration` (float32, eval) holding the weights of the
    CTranslate2 Whisper in `model_dir`, with the generation config Whisper's `generate`
    needs (language / task tokens, suppressed tokens) taken from its config.json and
    vocabulary."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    ct2, _ = read_ct2(model_dir / "model.bin")
    cfg = json.loads((model_dir / "config.json").read_text())
    vocab = (model_dir / "vocabulary.txt").read_text().splitlines()
    token_id = {token: i for i, token in enumerate(vocab)}
    layers = sum(1 for k in ct2 if k.startswith("encoder/layer_") and k.endswith("/ffn/linear_0/weight"))
    d_model = ct2["encoder/conv1/weight"].shape[0]
    heads = int(ct2["encoder/num_heads"])
    config = WhisperConfig(
        vocab_size=len(vocab),
        num_mel_bins=ct2["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=ct2["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=ct2["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=token_id["<|endoftext|>"],
        bos_token_id=token_id["<|endoftext|>"],
        eos_token_id=token_id["<|endoftext|>"],
        decoder_start_token_id=token_id["<|startoftranscript|>"],
    )
    model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in _hf_state_dict(ct2, layers).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "proj_out.weight"]:
        raise ValueError(f"CTranslate2 -> transformers mapping: missing {missing}, unexpected {unexpected}")
    multilingual = len(vocab) >= MULTILINGUAL_VOCAB
    gen = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=cfg["suppress_ids"],
        begin_suppress_tokens=cfg["suppress_ids_begin"],
        alignment_heads=cfg["alignment_heads"],
        no_timestamps_token_id=token_id["<|notimestamps|>"],
        prev_sot_token_id=token_id["<|startofprev|>"],
        is_multilingual=multilingual,
        lang_to_id={vocab[i]: i for i in cfg["lang_ids"]} if multilingual else {},
        task_to_id={"transcribe": token_id["<|transcribe|>"], "translate": token_id["<|translate|>"]},
        max_initial_timestamp_index=50,
    )
    model.generation_config = gen
    return model.eval()


def random_ct2(size: str, out_dir: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Write a random-weight CTranslate2 Whisper of official size `size` (float16 on disk,
    so int8/float32 can be chosen at load) into `out_dir`, with the multilingual tokenizer
    files of `tokenizer_dir`; returns `out_dir`. Built from a config, never downloaded."""
    import ctranslate2
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    if (out_dir / "model.bin").is_file():
        return out_dir
    dims = SIZES[size]
    config = WhisperConfig(
        vocab_size=MULTILINGUAL_VOCAB,
        num_mel_bins=dims["mels"],
        d_model=dims["d_model"],
        encoder_layers=dims["layers"],
        decoder_layers=dims["layers"],
        encoder_attention_heads=dims["heads"],
        decoder_attention_heads=dims["heads"],
        encoder_ffn_dim=4 * dims["d_model"],
        decoder_ffn_dim=4 * dims["d_model"],
        decoder_start_token_id=50258,
        pad_token_id=50257,
        bos_token_id=50257,
        eos_token_id=50257,
        suppress_tokens=[],
        begin_suppress_tokens=[220, 50257],
    )
    staging = out_dir.with_name(out_dir.name + ".config")
    config.save_pretrained(staging)  # the converter reads the config from a directory
    shutil.copy(tokenizer_dir / "tokenizer.json", staging / "tokenizer.json")

    class _FromConfig(ctranslate2.converters.TransformersConverter):
        """ctranslate2's own Whisper conversion, of a model built in memory from the config
        (random weights, float16 from the start: large-v3 in float32 would need 6 GB)."""

        def load_model(self, model_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
            torch.manual_seed(seed)
            default = torch.get_default_dtype()
            torch.set_default_dtype(torch.float16)
            try:
                return WhisperForConditionalGeneration(config).eval()
            finally:
                torch.set_default_dtype(default)

        def load_tokenizer(self, tokenizer_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast(tokenizer_file=str(Path(model_name_or_path) / "tokenizer.json"))

    _FromConfig(str(staging), copy_files=["tokenizer.json"]).convert(str(out_dir), quantization="float16", force=True)
    shutil.rmtree(staging)
    # The language tokens of the real multilingual tokenizer (the converter finds none in a bare
    # tokenizer.json), and large-v3's 128 mel bins for faster-whisper's feature extractor.
    cfg = json.loads((out_dir / "config.json").read_text())
    cfg["lang_ids"] = json.loads((tokenizer_dir / "config.json").read_text())["lang_ids"]
    (out_dir / "config.json").write_text(json.dumps(cfg))
    (out_dir / "preprocessor_config.json").write_text(json.dumps({"feature_size": dims["mels"]}))
    return out_dir
