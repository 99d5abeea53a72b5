"""CUDA: every method, many phrases per image, the benchmark and the command line run on
the GPU and agree with the CPU. Skipped as a whole without a CUDA device."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import PHRASES, make_clip, make_tokenizer
from PIL import Image

from captum_matex.adapters import HFCLIPAdapter
from captum_matex.support import runnable_methods
from captum_matex import MATEX, baselines
from captum_matex.cli import main
from captum_matex.evaluation import BenchmarkConfig, run_benchmark

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.usefixtures("exact_float32"),
]

METHODS = runnable_methods(HFCLIPAdapter)
#: methods drawing noise from the device's generator: CUDA and CPU draws differ
STOCHASTIC = {"m2ib", "smoothgrad"}
CHEAP = {
    "integrated_gradients": dict(n_steps=4, internal_batch_size=16),
    "smoothgrad": dict(nt_samples=2),
    "m2ib": dict(steps=2, num_samples=2),
}
IMAGES = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(8))
TEXT = PHRASES[:3]
TOKENIZER = make_tokenizer()
#: max |CUDA - CPU| on maps in [0, 1] with TF32 off (float32 on both)
DEVICE_TOLERANCE = 1e-3


def explainer(name, model):
    return baselines.get(name)(model, TOKENIZER, **CHEAP.get(name, {}))


@pytest.mark.parametrize("name", METHODS)
def test_every_method_runs_on_cuda_and_matches_the_cpu(name):
    model = make_clip()
    on_cpu = explainer(name, model).attribute(IMAGES, (TEXT,))
    on_gpu = explainer(name, copy.deepcopy(model).cuda()).attribute(IMAGES.cuda(), (TEXT,))
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.float32
    assert on_gpu.shape == IMAGES.shape and torch.isfinite(on_gpu).all()
    assert (on_gpu >= 0).all() and (on_gpu <= 1).all()
    if name not in STOCHASTIC:
        error = (on_gpu.cpu() - on_cpu).abs().max().item()
        assert error <= DEVICE_TOLERANCE, f"{name}: max |cuda - cpu| = {error:.2e}"


def test_many_phrases_per_image_on_cuda_equal_separate_calls():
    model = make_clip().cuda()
    images = IMAGES.cuda()
    explainer_ = MATEX(model, TOKENIZER)
    maps = explainer_.attribute_phrases(images, PHRASES)
    assert maps.shape == (3, len(PHRASES), *IMAGES.shape[1:]) and maps.device.type == "cuda"
    for k, phrase in enumerate(PHRASES):
        separate = explainer_.attribute(images, (phrase,))
        assert (maps[:, k] - separate).abs().max().item() <= DEVICE_TOLERANCE


def test_benchmark_on_cuda_gives_the_cpu_study(tmp_path):
    config = dict(limit=2, batch_size=2, methods=["matex", "chefer"], faithfulness=False)
    cpu = run_benchmark(BenchmarkConfig(**config), tmp_path / "cpu", progress=False)
    gpu = run_benchmark(BenchmarkConfig(**config), tmp_path / "cuda", device="cuda",
                        progress=False)
    for name in config["methods"]:
        # randomisation differs: the randomised copy is re-initialised by the device's generator
        for metric in ("pointing_game", "miou", "cnr", "prompt_sensitivity"):
            assert gpu["methods"][name][metric]["mean"] == pytest.approx(
                cpu["methods"][name][metric]["mean"], abs=1e-2
            ), (name, metric)


def test_explain_command_on_cuda(tmp_path):
    image = tmp_path / "chest.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 48), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    assert main(["explain", str(image), "left pleural effusion", "--device", "cuda",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    heat = np.load(out / summary["phrases"][0]["files"][1])
    assert heat.shape == (64, 48) and np.isfinite(heat).all() and heat.max() > 0
