r"""
Train the embedded phantom report model (a small LLaVA), reproducibly from a seed.

Usage, from the root of a source checkout with the package installed
(``pip install -e .``)::

    python tools/train_phantom_llava.py --seed 0 --out DIR [--steps N] [--vision-lr-mult 0]

It is a development tool, kept out of the installed package; the weights it
trained ship in ``captum_matex/zoo/phantom_llava/``. The script

1. renders a bank of training phantoms once (``PhantomCXR("train", seed)``)
   and a validation bank (``PhantomCXR("val", seed)``) with
   ``tools/train_phantom.py``'s bank code (8-bit, resized as the processor
   does);
2. builds :func:`captum_matex.zoo.phantom_llava.build_config`'s
   ``LlavaForConditionalGeneration``, copies the shipped phantom CLIP's
   vision weights into its tower, and trains it with teacher-forced
   next-token cross-entropy on each film's report
   (:func:`~captum_matex.zoo.phantom_llava.report_text`) and ``<eos>``, in
   the layout ``<bos> <image>*196 findings : <report> <eos>``; the tower is
   fine-tuned at ``--vision-lr-mult`` times the learning rate (0 freezes it);
   images get ``tools/train_phantom.py``'s small shifts and intensity jitter
   (never a left-right flip);
3. scores greedy generation on the validation bank every ``--eval-every``
   steps (share of films with a finding whose report names it and its side,
   plus normal films reported normal), keeps the best checkpoint, saves it
   with the processor to ``--out`` and writes ``metrics.json`` and
   ``TRAINING.md`` (command, seed, wall time, the generation accuracy on the
   test split of ``--unseen-seed``, a seed never trained or selected on).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_phantom import augment, load_or_render, lr_at, normalise  # noqa: E402

from captum_matex.data.phantom import FINDINGS  # noqa: E402
from captum_matex.zoo.phantom_clip import phantom_clip  # noqa: E402
from captum_matex.zoo.phantom_llava import (  # noqa: E402
    NUM_IMAGE_TOKENS,
    PAD_ID,
    build_config,
    build_llava_processor,
    evaluate_generation,
    generate_reports,
    init_vision_from_phantom_clip,
    join_report,
    phantom_llava,
    save_pretrained,
    score_report,
    summarise_scores,
    training_ids,
)


def meta_report(meta: Dict[str, Any]) -> str:
    r"""A bank film's report, from its metadata (as ``report_text`` of the sample)."""
    return join_report([] if meta["finding"] == "normal" else meta["phrases"])


def meta_findings(meta: Dict[str, Any]) -> List[Tuple[str, Optional[str]]]:
    r"""A bank film's ``(finding, laterality)`` pairs, primary first."""
    return [(meta["finding"], meta["laterality"])] + [tuple(o) for o in meta["others"]]


def batch_sequences(tokenizer: Any, reports: Sequence[str]) -> Dict[str, torch.Tensor]:
    r"""Right-padded ``input_ids``, ``attention_mask`` and ``labels`` of a batch."""
    pairs = [training_ids(tokenizer, r) for r in reports]
    width = max(len(ids) for ids, _ in pairs)
    ids = torch.full((len(pairs), width), PAD_ID, dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for r, (a, b) in enumerate(pairs):
        ids[r, : len(a)] = torch.tensor(a)
        labels[r, : len(b)] = torch.tensor(b)
        mask[r, : len(a)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def evaluate_bank(
    model: Any, processor: Any, images: torch.Tensor, metas: Sequence[Dict[str, Any]], batch: int = 100
) -> Dict[str, Any]:
    r"""Greedy-generation scores on a pre-rendered bank (the validation films)."""
    was = model.training
    model.eval()
    scores, exact = [], []
    for a in range(0, len(images), batch):
        reports = generate_reports(model, processor, pixel_values=normalise(images[a : a + batch]))
        for m, rep in zip(metas[a : a + batch], reports):
            scores.append(score_report(rep, meta_findings(m)))
            exact.append(rep == meta_report(m))
    model.train(was)
    out = summarise_scores(scores, [m["finding"] for m in metas])
    out["exact_match"] = sum(exact) / len(exact)
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    r"""Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--clip",
        type=Path,
        default=None,
        help="phantom CLIP directory whose vision tower starts the model (default: the shipped one; "
        "the shipped LLaVA started from its first stage, see phantom_llava/TRAINING.md)",
    )
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--vision-lr-mult", type=float, default=0.1, help="tower learning rate / --lr (0: frozen)")
    p.add_argument("--wd", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--bank", type=int, default=20000, help="training images rendered once")
    p.add_argument("--val", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=1, help="processes rendering the bank")
    p.add_argument("--cache", type=Path, default=None, help="directory caching rendered banks")
    p.add_argument("--text-width", type=int, default=160)
    p.add_argument("--text-layers", type=int, default=3)
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop early after this wall time (0: off)")
    p.add_argument("--unseen-seed", type=int, default=1, help="phantom seed of the final test report")
    p.add_argument("--test", type=int, default=600, help="unseen-seed test films for the final report")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    r"""
    Train, select on validation, save and report.

    Args:

        argv (sequence of str, optional): Command-line arguments.
            Default: ``sys.argv[1:]``

    Returns:
        dict: Final metrics (validation and unseen-seed test).
    """
    from transformers import LlavaForConditionalGeneration

    args = parse_args(argv)
    t0 = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log = open(args.out / "train_log.jsonl", "w")

    def report(rec: Dict[str, Any]) -> None:
        rec["wall_s"] = round(time.time() - t0, 1)
        print(json.dumps(rec), flush=True)
        log.write(json.dumps(rec) + "\n")
        log.flush()

    processor = build_llava_processor()
    tokenizer = processor.tokenizer
    model = LlavaForConditionalGeneration(
        build_config(len(tokenizer), text_width=args.text_width, text_layers=args.text_layers)
    )
    init_vision_from_phantom_clip(model, None if args.clip is None else phantom_clip(args.clip)[0])
    n_params = sum(p.numel() for p in model.parameters())

    train_x, train_meta = load_or_render(args.cache, "train", args.seed, args.bank, args.workers)
    val_x, val_meta = load_or_render(args.cache, "val", args.seed, args.val, args.workers)
    reports = [meta_report(m) for m in train_meta]
    report({"event": "banks", "train": len(train_x), "val": len(val_x), "params": n_params})

    tower = list(model.model.vision_tower.parameters())
    frozen = args.vision_lr_mult == 0
    for p in tower:
        p.requires_grad_(not frozen)
    groups = []
    for name, mult in (("tower", args.vision_lr_mult), ("rest", 1.0)):
        params = [p for n, p in model.named_parameters()
                  if p.requires_grad and n.startswith("model.vision_tower.") == (name == "tower")]
        groups.append({"params": [p for p in params if p.ndim >= 2], "weight_decay": args.wd, "lr_mult": mult})
        groups.append({"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr_mult": mult})
    groups = [g for g in groups if g["params"]]
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98))

    best: Tuple[float, int, Dict[str, Any]] = (-1.0, -1, {})
    best_state: Dict[str, torch.Tensor] = {}
    model.train()
    step_t = time.time()
    step = 0
    losses: List[float] = []
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup) * g["lr_mult"]
        idx = torch.randint(0, len(train_x), (args.batch,), generator=gen)
        pixels = normalise(augment(train_x[idx], gen))
        batch = batch_sequences(tokenizer, [reports[i] for i in idx.tolist()])
        loss = model(pixel_values=pixels, **batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step % 25 == 0:
            report({"step": step, "loss": round(sum(losses) / len(losses), 4),
                    "s_per_step": round((time.time() - step_t) / (25 if step else 1), 3)})
            losses, step_t = [], time.time()
        last = step == args.steps - 1
        over = args.max_minutes > 0 and (time.time() - t0) > 60 * args.max_minutes
        if (step + 1) % args.eval_every == 0 or last or over:
            val = evaluate_bank(model, processor, val_x, val_meta)
            score = val["finding_side_acc"] + val["normal_acc"]
            report({"event": "val", "step": step + 1, **val})
            if score >= best[0]:
                best = (score, step + 1, val)
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if over:
            report({"event": "time_limit", "step": step + 1})
            break
    train_s = time.time() - t0
    model.load_state_dict(best_state)
    save_pretrained(model, processor, args.out)
    loaded, proc = phantom_llava(args.out)
    test = evaluate_generation(loaded, proc, split="test", seed=args.unseen_seed, n=args.test)
    metrics = {
        "seed": args.seed,
        "steps_run": step + 1,
        "best_step": best[1],
        "val": best[2],
        "test_unseen_seed": args.unseen_seed,
        "test_unseen": test,
        "params": n_params,
        "image_tokens": NUM_IMAGE_TOKENS,
        "vision_tower": "frozen" if frozen else f"fine-tuned at {args.vision_lr_mult} x lr",
        "train_wall_s": round(train_s, 1),
        "total_wall_s": round(time.time() - t0, 1),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_training_md(args, metrics, argv)
    report({"event": "done", "test_unseen": {k: v for k, v in test.items() if k != "examples"}})
    log.close()
    return metrics


def write_training_md(args: argparse.Namespace, metrics: Dict[str, Any], argv: Optional[Sequence[str]]) -> None:
    r"""Write ``TRAINING.md`` (command, seed, wall time, final metrics)."""
    cmd = "python tools/train_phantom_llava.py " + " ".join(argv if argv is not None else sys.argv[1:])
    test, val = metrics["test_unseen"], metrics["val"]
    size_mb = (args.out / "model.safetensors").stat().st_size / 2**20
    lines = [
        "# Phantom LLaVA report model: training record",
        "",
        f"- command: `{cmd}`",
        f"- seed: {args.seed}",
        f"- parameters: {metrics['params']:,} ({size_mb:.1f} MB safetensors)",
        f"- vision tower: initialised from the phantom CLIP, {metrics['vision_tower']}",
        f"- steps run: {metrics['steps_run']} of batch {args.batch} "
        f"(best validation checkpoint: step {metrics['best_step']})",
        f"- wall time: {metrics['train_wall_s'] / 60:.1f} min rendering the banks and training, "
        f"{metrics['total_wall_s'] / 60:.1f} min with the final test evaluation, on {args.threads} CPU thread(s)",
        "",
        f"## Greedy generation, unseen seed (`PhantomCXR(split='test', seed={metrics['test_unseen_seed']})`, "
        f"{test['n']} films)",
        "",
        f"- films with a finding whose report names it and its side: {test['finding_side_acc']:.3f} "
        f"(n={test['n_finding']}); finding only: {test['finding_acc']:.3f}",
        f"- normal films reported without a finding: {test['normal_acc']:.3f} (n={test['n_normal']})",
        f"- second findings named with their side: {test['secondary_recall']:.3f} (n={test['n_secondary']})",
        f"- films with a finding whose report names one that is not there: {test['hallucination_rate']:.3f}",
        f"- reports identical to the training target (template, zone and size words included): "
        f"{test['exact_match']:.3f}",
        "",
        "| primary finding | finding and side named |",
        "|---|---|",
    ]
    for f in FINDINGS:
        if f in test["per_finding"]:
            lines.append(f"| {f} | {test['per_finding'][f]:.3f} |")
    lines += [
        "",
        f"Validation (selection, `PhantomCXR('val', seed={args.seed})[0:{args.val}]`) at the best step: "
        f"finding and side {val['finding_side_acc']:.3f}, normal {val['normal_acc']:.3f}.",
        "",
        "Computed by `captum_matex.zoo.phantom_llava.evaluate_generation(model, processor, "
        f"split='test', seed={metrics['test_unseen_seed']}, n={test['n']})`.",
        "",
        "## Notes",
        "",
        f"- Training films: `PhantomCXR('train', seed={args.seed})[0:{args.bank}]`; sequence layout "
        "`<bos> <image>*196 findings : <report> <eos>`, loss on the report and `<eos>`.",
        "- Loss curve and validation scores: `train_log.jsonl`; numbers: `metrics.json`.",
        "",
    ]
    (args.out / "TRAINING.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
