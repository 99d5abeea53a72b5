"""How far rounding alone moves the explained score: the measurement behind
``captum_matex._maps.FLAT_ULPS``.

Scores the same images alone and inside batches of 5 and 16 copies, with 1, 2
and 4 threads, and prints the largest change in units of machine epsilon
times |score|, per model and dtype. A map whose spread is below
``FLAT_ULPS`` of these units is judged to be rounding noise.

    python benchmarks/rounding_noise.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import PHRASES, make_clip, make_tokenizer  # noqa: E402

from captum_matex import SimilarityForward  # noqa: E402
from captum_matex._maps import FLAT_ULPS  # noqa: E402
from captum_matex.data import PhantomCXR  # noqa: E402
from captum_matex.zoo import phantom_clip  # noqa: E402

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def worst_noise(model, tokenizer, images: torch.Tensor, phrases: list[str], dtype) -> float:
    forward = SimilarityForward(model.to(dtype), tokenizer)
    worst = 0.0
    for threads in (1, 2, 4):
        torch.set_num_threads(threads)
        with torch.no_grad():
            alone = forward(images.to(dtype), phrases).double()
            for copies in (5, 16):
                batch = images.to(dtype).repeat_interleave(copies, 0)
                batched = forward(batch, [p for p in phrases for _ in range(copies)])
                change = (batched.double().view(-1, copies) - alone[:, None]).abs().amax(1)
                units = torch.finfo(dtype).eps * alone.abs().clamp_min(1e-3)
                worst = max(worst, (change / units).max().item())
    model.float()
    return worst


def main() -> None:
    tiny = make_clip(layers=3, image_size=16, patch=8, width=16)
    tiny_images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    phantom, processor = phantom_clip()
    samples = [PhantomCXR(split="test", seed=0)[i] for i in range(4)]
    grey = [(s.image[0].numpy() * 255).round().astype("uint8") for s in samples]
    pixels = processor(images=grey, return_tensors="pt")["pixel_values"]
    print("| model | dtype | max |score change| / (eps * |score|) |")
    print("|---|---|---|")
    for name, model, tok, images, phrases in [
        ("tiny CLIP", tiny, make_tokenizer(), tiny_images, PHRASES[:3]),
        ("phantom CLIP", phantom, processor, pixels, [s.phrase for s in samples]),
    ]:
        for dtype in DTYPES:
            noise = worst_noise(model, tok, images, phrases, dtype)
            print(f"| {name} | {str(dtype).removeprefix('torch.')} | {noise:.1f} |")
    print(f"\nFLAT_ULPS = {FLAT_ULPS}")


if __name__ == "__main__":
    main()
