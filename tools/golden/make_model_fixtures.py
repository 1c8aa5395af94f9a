"""Golden fixtures for omnibind's ImageBind model, made with Meta's reference implementation.

Run with the reference's interpreter (see REFERENCE.md for its venv; it needs nothing from
omnibind):

    /tmp/ib-ref/bin/python tools/golden/make_model_fixtures.py [--out tests/fixtures/golden/model]

Writes into --out:
- ``tiny_state_dict.pt``: the reference model in REFERENCE.md's tiny configuration with seeded
  random weights (LayerNorm weights/biases and linear biases perturbed so that a model that
  ignored them would fail), all six modalities, loadable with ``weights_only=True``;
- ``tiny_io.npz``: seeded inputs and the reference's outputs on them: float images and uint8
  images (normalised by torchvision like the reference's data.py), texts tokenized by the
  reference tokenizer, audio (B, 3, 1, 128, 204) and audio items of 1, 4 and 2 clips; outputs
  as the reference returns them (``*_raw``) and L2-normalised (``*_unit``);
- ``huge_state_dict_shapes.json``: key -> shape of ``imagebind_huge()`` for ALL modalities;
- ``meta.json``: versions, seeds, the texts, and the tokenizer's truncation behaviour.

Float inputs are rounded to values fp16 can hold, so they are stored as fp16 at half the size
and lose nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from imagebind.data import load_and_transform_text
from imagebind.models.imagebind_model import ImageBindModel, imagebind_huge
from PIL import Image
from torch import nn
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # our config module is dependency-free
from shared.imagebind.config import TINY, reference_kwargs

SEED = 20251123
TINY_KWARGS = reference_kwargs(TINY)
TEXTS = [
    "a photo of a dog",
    "",
    "Ein Hund läuft über die Straße 🐕 — 日本語のテキスト, ça va?",
    "A  &amp;  B said: &quot;hello&quot;   WORLD\n\tagain",
    " ".join(f"word{i} and more" for i in range(60)),  # far beyond 77 tokens
]
AUDIO_VAR_CLIPS = (1, 4, 2)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
EOT = 49407


def fp16_exact(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float16).to(torch.float32)


def perturb_(model: nn.Module, gen: torch.Generator) -> None:
    """Make LayerNorms and biases non-trivial (the reference initialises them to 1 and 0)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.add_(torch.randn(module.weight.shape, generator=gen) * 0.1)
                module.bias.add_(torch.randn(module.bias.shape, generator=gen) * 0.05)
        for name, param in model.named_parameters():
            if name.endswith("_bias") or name.endswith(".bias"):
                param.add_(torch.randn(param.shape, generator=gen) * 0.05)
        # A learned text scale other than CLIP's initial 1/0.07 proves the loaded value is used.
        model.modality_postprocessors["text"][1].log_logit_scale.fill_(float(np.log(30.0)))


def uint8_to_reference_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> normalised floats through the reference's torchvision transforms."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=CLIP_MEAN, std=CLIP_STD)])
    return torch.stack([transform(Image.fromarray(img.transpose(1, 2, 0))) for img in images])


def unit(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x.float(), dim=-1).numpy()


def make_tiny(out: Path) -> dict[str, object]:
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = ImageBindModel(**TINY_KWARGS).eval()
    perturb_(model, gen)
    state = model.state_dict()
    torch.save(state, out / "tiny_state_dict.pt")

    images_float = fp16_exact(torch.randn(2, 3, 224, 224, generator=gen))
    images_uint8 = torch.randint(0, 256, (3, 3, 224, 224), generator=gen, dtype=torch.uint8).numpy()
    images_from_uint8 = uint8_to_reference_tensor(images_uint8)
    tokens = load_and_transform_text(TEXTS, "cpu")
    audio = fp16_exact(torch.randn(2, 3, 1, 128, 204, generator=gen))
    audio_var = [fp16_exact(torch.randn(n, 1, 128, 204, generator=gen)) for n in AUDIO_VAR_CLIPS]

    with torch.no_grad():
        out_images = model({"vision": images_float})["vision"]
        out_uint8 = model({"vision": images_from_uint8})["vision"]
        out_text = model({"text": tokens})["text"]
        out_audio = model({"audio": audio})["audio"]
        out_audio_var = torch.cat([model({"audio": clips[None]})["audio"] for clips in audio_var])

    arrays = {
        "images_float": images_float.to(torch.float16).numpy(),
        "images_uint8": images_uint8,
        "text_tokens": tokens.numpy(),
        "audio": audio.to(torch.float16).numpy(),
        "audio_var": torch.cat(audio_var).to(torch.float16).numpy(),
        "audio_var_clips": np.array(AUDIO_VAR_CLIPS, dtype=np.int64),
    }
    for name, value in {
        "images_float": out_images,
        "images_uint8": out_uint8,
        "text": out_text,
        "audio": out_audio,
        "audio_var": out_audio_var,
    }.items():
        arrays[f"{name}_raw"] = value.numpy()
        arrays[f"{name}_unit"] = unit(value)
    np.savez_compressed(out / "tiny_io.npz", **arrays)

    long_row = tokens[-1].tolist()
    return {
        "tiny_kwargs": TINY_KWARGS,
        "tiny_keys": len(state),
        "texts": TEXTS,
        # The installed reference truncates as `tokens[:76] + [EOT]` (the Nov 2025 fix):
        "long_text_ends_with_eot_at_76": long_row[76] == EOT,
        "eot_positions": tokens.argmax(dim=-1).tolist(),
    }


def make_huge_shapes(out: Path) -> dict[str, object]:
    model = imagebind_huge(pretrained=False)
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    params_by_modality: dict[str, int] = {}
    for key, value in model.state_dict().items():
        modality = key.split(".")[1]
        params_by_modality[modality] = params_by_modality.get(modality, 0) + value.numel()
    del model
    (out / "huge_state_dict_shapes.json").write_text(json.dumps(shapes, indent=0) + "\n")
    return {"huge_keys": len(shapes), "huge_numel_by_modality": params_by_modality}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/golden/model"))
    parser.add_argument("--skip-huge", action="store_true", help="keep the existing huge key/shape table")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    meta: dict[str, object] = {
        "generator": "tools/golden/make_model_fixtures.py",
        "seed": SEED,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "reference": "imagebind-unofficial (facebookresearch/ImageBind)",
    }
    meta.update(make_tiny(args.out))
    if not args.skip_huge:
        meta.update(make_huge_shapes(args.out))
    elif (args.out / "meta.json").exists():
        old = json.loads((args.out / "meta.json").read_text())
        meta.update({k: old[k] for k in ("huge_keys", "huge_numel_by_modality") if k in old})
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in meta.items() if k != "texts"}, indent=2))


if __name__ == "__main__":
    main()
