"""Cost of explanation methods relative to one forward+backward of the same score.

For each model size and batch size, measured in one run on the same model
and inputs (interleaved rounds, median of each):

- ``floor``: one forward + backward of the model family's image-text score
  (CLIP: cosine; SigLIP: sigmoid logit; LLaVA: the phrase's log-likelihood)
  with respect to the images, the model as users load it from transformers 5.x
  (SDPA attention). This is the floor for any gradient method.
- ``floor_eager``: the same with eager attention (the path that exposes
  attention probabilities).
- each method from ``captum_matex.baselines`` named by ``--methods``.

Peak memory above the loaded model is measured per method in a fresh
process (Linux VmHWM reset through /proc/self/clear_refs), or with
``torch.cuda.max_memory_allocated`` on CUDA.

Usage::

    python benchmarks/speed.py                      # tiny, ViT-B/16 batch 1 and 8
    python benchmarks/speed.py --sizes tiny --batches 1 --methods matex,chefer
    python benchmarks/speed.py --sizes vit-b16 --batches 1 --methods matex --phrases 8
    python benchmarks/speed.py --sizes openclip-vit-b16,biomedclip-vit-b16   # [openclip] extra
    python benchmarks/speed.py --sizes siglip-tiny,siglip-b16    # SigLIP: map head, sigmoid logit
    python benchmarks/speed.py --sizes llava-tiny,llava-b16      # LLaVA: phrase log-likelihood
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    SiglipConfig,
    SiglipModel,
)

from captum_matex.adapters import get_adapter
from captum_matex.baselines import get as get_method

SIZES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                 num_attention_heads=4, image_size=112, patch_size=8),
    "vit-b16": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, image_size=224, patch_size=16),
}


#: transformers SigLIP image towers (``map`` head, sigmoid logit), random-initialised.
SIGLIP_SIZES = {"siglip-tiny": "tiny", "siglip-b16": "vit-b16"}

#: transformers LLaVA models: a CLIP image tower of the given size, a Llama decoder
#: (hidden width, layers; vocabulary 32000, as LLaVA's), random-initialised.
LLAVA_SIZES = {"llava-tiny": ("tiny", 64, 2), "llava-b16": ("vit-b16", 1024, 8)}
#: token ids per explained phrase for the generative sizes
PHRASE_TOKENS = 8

#: open_clip architectures (need the ``openclip`` extra), random-initialised.
OPEN_CLIP_SIZES = ("openclip-vit-b16", "biomedclip-vit-b16")


def build_model(size: str) -> torch.nn.Module:
    """A random-initialised model with the given image tower (as users load it:
    SDPA for transformers, open_clip's and timm's fused attention)."""
    torch.manual_seed(0)
    if size == "openclip-vit-b16":
        import open_clip

        return open_clip.create_model("ViT-B-16", pretrained=None).eval()
    if size == "biomedclip-vit-b16":  # BiomedCLIP's image tower: a timm ViT-B/16 trunk
        import open_clip

        return open_clip.CustomTextCLIP(
            embed_dim=512,
            vision_cfg=dict(timm_model_name="vit_base_patch16_224", timm_model_pretrained=False,
                            timm_pool="", timm_proj="linear", image_size=224),
            text_cfg=dict(context_length=16, width=64, heads=2, layers=1),
        ).eval()
    if size in LLAVA_SIZES:
        vision, width, layers = LLAVA_SIZES[size]
        config = LlavaConfig(
            vision_config=dict(SIZES[vision], model_type="clip_vision_model"),
            text_config=dict(model_type="llama", hidden_size=width, intermediate_size=4 * width,
                             num_hidden_layers=layers, num_attention_heads=max(1, width // 64),
                             vocab_size=32000, max_position_embeddings=512),
            image_token_id=31999, vision_feature_layer=-2,
        )
        return LlavaForConditionalGeneration(config).eval()
    if size in SIGLIP_SIZES:
        vision = SIZES[SIGLIP_SIZES[size]]
        config = SiglipConfig(
            vision_config=vision,
            text_config=dict(hidden_size=vision["hidden_size"], intermediate_size=128,
                             num_hidden_layers=1, num_attention_heads=2),
        )
        return SiglipModel(config).eval()
    vision = SIZES[size]
    config = CLIPConfig(
        vision_config=vision,
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2),
        projection_dim=512 if size != "tiny" else 64,
    )
    return CLIPModel(config).eval()


def make_inputs(model: torch.nn.Module, batch: int, device: str):
    adapter = get_adapter(model)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(batch, adapter.num_channels, *adapter.image_size, generator=generator)
    if adapter.embedding_dim is None:  # a generative model: the phrase's token ids
        text = torch.randint(4, 31000, (batch, PHRASE_TOKENS), generator=generator)
    else:
        text = torch.randn(batch, adapter.embedding_dim, generator=generator)
    return images.to(device), text.to(device)


def runner(name: str, model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], object]:
    """A callable running ``name`` once on ``(images, text_embeddings)``."""
    if name in ("floor", "floor_eager"):
        adapter = get_adapter(model)

        def run(images, text):
            eager = adapter.attention_exposed() if name == "floor_eager" else nullcontext()
            with eager:
                x = images.detach().requires_grad_(True)
                score = adapter.trace(x, text, attentions=False).score
                return torch.autograd.grad(score.sum(), x)[0]

        return run
    explainer = get_method(name)(model)
    return lambda images, text: explainer.attribute(images, (text,))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_methods(model, names, batch, device, rounds) -> dict[str, float]:
    """Median seconds per call of each method, interleaved over ``rounds``."""
    images, text = make_inputs(model, batch, device)
    runs = {name: runner(name, model) for name in names}
    for run in runs.values():  # warm-up
        run(images, text)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name, run in runs.items():
            _sync(device)
            start = time.perf_counter()
            run(images, text)
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def time_phrases(model, phrases: int, device, rounds) -> dict[str, float]:
    """Median seconds of MATEX on one image: one phrase, ``phrases`` phrases with
    one image-tower pass (``attribute_phrases``), and the same by repeating the image."""
    images, text = make_inputs(model, phrases, device)
    image = images[:1]
    explainer = get_method("matex")(model)
    runs = {
        "one phrase": lambda: explainer.attribute(image, (text[:1],)),
        f"{phrases} phrases, one tower pass": lambda: explainer.attribute_phrases(image, text),
        f"{phrases} phrases, repeated image": lambda: explainer.attribute(
            image.expand(phrases, -1, -1, -1), (text,)),
    }
    for run in runs.values():
        run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def _rss_peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def _rss_now_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _peak_memory_child(size, name, batch, device) -> float:
    torch.set_num_threads(torch.get_num_threads())
    model = build_model(size).to(device)
    images, text = make_inputs(model, batch, device)
    run = runner(name, model)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run(images, text)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    Path("/proc/self/clear_refs").write_text("5")
    base = _rss_now_kib()
    run(images, text)
    return (_rss_peak_kib() - base) / 1024


def peak_memory_mib(size, name, batch, device) -> float:
    """Peak memory (MiB) of one call above the loaded model, in a fresh process."""
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_peak_memory_child, size, name, batch, device).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="tiny,vit-b16")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--methods", default="matex")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory runs")
    parser.add_argument("--phrases", type=int, default=0,
                        help="also time MATEX with this many phrases on one image")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    names = ["floor", "floor_eager"] + [m for m in args.methods.split(",") if m]
    results = []
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    for size in args.sizes.split(","):
        model = build_model(size).to(args.device)
        for batch in map(int, args.batches.split(",")):
            times = time_methods(model, names, batch, args.device, args.rounds)
            memory = {} if args.no_memory else {
                name: peak_memory_mib(size, name, batch, args.device) for name in names
            }
            print(f"\n{size}, batch {batch}")
            print(f"{'method':>14} {'s/call':>9} {'s/image':>9} {'x floor':>8} "
                  f"{'x eager':>8} {'peak MiB':>9} {'x floor mem':>11}")
            for name in names:
                row = {
                    "size": size, "batch": batch, "method": name,
                    "seconds": times[name], "seconds_per_image": times[name] / batch,
                    "ratio_to_floor": times[name] / times["floor"],
                    "ratio_to_eager_floor": times[name] / times["floor_eager"],
                    "peak_mib": memory.get(name),
                    "memory_ratio": (memory[name] / memory["floor"]) if memory else None,
                }
                results.append(row)
                mem = f"{row['peak_mib']:9.1f} {row['memory_ratio']:11.2f}" if memory else ""
                print(f"{name:>14} {row['seconds']:9.4f} {row['seconds_per_image']:9.4f} "
                      f"{row['ratio_to_floor']:8.2f} {row['ratio_to_eager_floor']:8.2f} {mem}")
        if args.phrases > 1:
            times = time_phrases(model, args.phrases, args.device, args.rounds)
            one = times["one phrase"]
            print(f"\n{size}, one image, MATEX for {args.phrases} phrases")
            for name, seconds in times.items():
                print(f"{name:>34} {seconds:9.4f} s {seconds / one:6.2f}x one phrase")
                results.append({"size": size, "phrases": args.phrases, "run": name,
                                "seconds": seconds, "ratio_to_one_phrase": seconds / one})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
