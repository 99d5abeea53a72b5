"""The benchmark: results log, resume after kills, torchrun sharding, MS-CXR layout."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captum_matex import SimilarityForward
from captum_matex.cli import main
from captum_matex.data import PhantomCXR
from captum_matex.data.geometry import prepare
from captum_matex.evaluation import BenchmarkConfig, ResultsFileError, ResultsLog, run_benchmark
from captum_matex.evaluation.report import write_report
from captum_matex.evaluation.results import read_rows, read_study
from captum_matex.evaluation.samples import phantom_samples
from captum_matex.zoo import phantom_clip

CONFIG = {"study": "unit", "limit": 3}


pytestmark = pytest.mark.usefixtures("tiny_threads")


def _rows(out: Path) -> list[dict]:
    settings = json.loads((out / "summary.json").read_text())["config"]
    rows = read_rows(sorted(out.glob("results.rank*.jsonl")), settings)
    return sorted(({k: v for k, v in r.items() if k != "seconds_per_sample"} for r in rows),
                  key=lambda r: (r["method"], r["sample"]))


# --------------------------------------------------------------------------
# results log
# --------------------------------------------------------------------------
def test_results_log_appends_durably_and_reloads(tmp_path):
    path = tmp_path / "r.jsonl"
    log = ResultsLog(path, CONFIG)
    log.append([{"sample": "a", "method": "m", "x": 1.5}, {"sample": "b", "method": "m", "x": None}])
    again = ResultsLog(path, CONFIG)
    assert again.rows == log.rows and len(again.rows) == 2
    assert path.read_text().count("\n") == 3  # header + two rows


def test_torn_last_line_is_dropped_and_repaired(tmp_path):
    path = tmp_path / "r.jsonl"
    ResultsLog(path, CONFIG).append([{"sample": str(i), "method": "m", "x": i} for i in range(3)])
    text = path.read_text()
    path.write_text(text[: len(text) - 9])  # killed in the middle of the last row
    log = ResultsLog(path, CONFIG)
    assert [r["sample"] for r in log.rows] == ["0", "1"]
    assert path.read_text() == text[: text.rindex('{"row"')]  # repaired to the intact prefix


def test_damaged_or_foreign_files_are_refused_and_kept_unless_forced(tmp_path):
    path = tmp_path / "r.jsonl"
    ResultsLog(path, CONFIG).append([{"sample": str(i), "method": "m", "x": i} for i in range(3)])
    good = path.read_text()
    lines = good.splitlines(keepends=True)
    path.write_text(lines[0] + lines[1].replace('"x":0', '"x":7') + "".join(lines[2:]))
    with pytest.raises(ResultsFileError, match="line 2 is damaged"):
        ResultsLog(path, CONFIG)
    path.write_text(good)
    with pytest.raises(ResultsFileError, match="another configuration"):
        ResultsLog(path, {"study": "other"})
    assert path.read_text() == good  # nothing overwritten
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text("my own notes\n")
    with pytest.raises(ResultsFileError, match="not a captum_matex results file"):
        ResultsLog(foreign, CONFIG)
    fresh = ResultsLog(path, {"study": "other"}, force=True)
    assert fresh.rows == [] and (tmp_path / "r.jsonl.bak").read_text() == good


def test_read_only_log_never_writes(tmp_path):
    path = tmp_path / "r.jsonl"
    ResultsLog(path, CONFIG).append([{"sample": "a", "method": "m"}])
    path.write_text(path.read_text() + '{"row": {"sam')
    before = path.read_text()
    log = ResultsLog(path, CONFIG, read_only=True)
    assert len(log.rows) == 1 and path.read_text() == before
    with pytest.raises(ResultsFileError, match="read-only"):
        log.append([{"sample": "b", "method": "m"}])


# --------------------------------------------------------------------------
# the study
# --------------------------------------------------------------------------
SMALL = dict(limit=6, batch_size=4, methods=["matex", "chefer", "prior_only"])


def test_a_stored_study_reads_back_with_the_configuration_of_its_header(tmp_path):
    run_benchmark(BenchmarkConfig(limit=3, methods=["rollout", "prior_only"], sanity=False,
                                  faithfulness=False), tmp_path / "study", progress=False)
    rows = read_study(tmp_path / "study")
    assert len(rows) == 6
    assert sorted(({k: v for k, v in r.items() if k != "seconds_per_sample"} for r in rows),
                  key=lambda r: (r["method"], r["sample"])) == _rows(tmp_path / "study")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsFileError, match="holds no"):
        read_study(tmp_path / "empty")
    (tmp_path / "damaged").mkdir()
    log = (tmp_path / "study" / "results.rank0.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "damaged" / "results.rank0.jsonl").write_text("{}\n" + "".join(log[1:]))
    with pytest.raises(ResultsFileError, match="header is damaged"):
        read_study(tmp_path / "damaged")


def test_benchmark_scores_every_pair_and_writes_the_report(tmp_path):
    summary = run_benchmark(BenchmarkConfig(**SMALL), tmp_path, progress=False)
    rows = _rows(tmp_path)
    assert len(rows) == 18 and {r["method"] for r in rows} == set(SMALL["methods"])
    for name in ("pointing_game", "miou", "cnr", "confidence_drop", "deletion_auc",
                 "randomisation_spearman", "prompt_sensitivity"):
        assert name in summary["methods"]["matex"]
    assert all(r["pointing_game"] in (0.0, 1.0) for r in rows)
    # the score column is the model's own image-text score, one value per sample
    model, processor = phantom_clip()
    samples = {s.id: s for s in phantom_samples("test", 6)}
    pixels, _ = prepare([s.load() for s in samples.values()], processor)
    expected = SimilarityForward(model, processor)(pixels, [s.phrase for s in samples.values()])
    by_id = dict(zip(samples, expected.tolist()))
    for row in rows:
        assert row["score"] == pytest.approx(by_id[row["sample"]], abs=1e-5)
    # prior_only never looks at the model: randomising the model leaves it unchanged
    assert summary["methods"]["prior_only"]["randomisation_spearman"]["mean"] == pytest.approx(1.0)
    assert summary["methods"]["matex"]["randomisation_spearman"]["mean"] < 0.6
    table = (tmp_path / "results.md").read_text()
    assert "| matex |" in table and "pointing_game ↑" in table and "confidence_drop ↓" in table
    assert (tmp_path / "figures" / "metrics.png").stat().st_size > 10_000
    assert (tmp_path / "figures" / "overlays.png").stat().st_size > 10_000


def test_report_breaks_the_grounding_metrics_down_by_finding(tmp_path):
    # values chosen so each finding's mean is exact in binary (x.25, x.5, x.75)
    rows = [
        {"sample": f"s{i}", "method": method, "finding": finding,
         "pointing_game": float(i % 2), "miou": miou, "cnr": cnr}
        for i, (method, finding, miou, cnr) in enumerate([
            ("matex", "nodule", 0.5, 3.0), ("matex", "nodule", 0.25, 2.0),
            ("matex", "edema", 0.25, 1.5), ("prior_only", "nodule", 0.125, 2.5),
            ("prior_only", "edema", 0.75, 2.25)])
    ]
    write_report(rows, {"methods": ["matex", "prior_only"]}, tmp_path)
    text = (tmp_path / "results.md").read_text()
    sections = {title: body for title, _, body in
                (part.partition("\n\n") for part in text.split("\n## ")[1:])}
    for metric in ("pointing_game", "miou", "cnr"):
        assert f"{metric} by finding (higher is better)" in sections
    miou = sections["miou by finding (higher is better)"].splitlines()
    assert miou[0] == "| method | edema | nodule |"
    assert miou[2:4] == ["| matex | 0.250 | 0.375 |", "| prior_only | 0.750 | 0.125 |"]
    assert "| matex | 1.500 | 2.500 |" in sections["cnr by finding (higher is better)"]


def test_randomisation_draws_average_each_pair_over_several_randomised_models(tmp_path):
    from captum_matex.evaluation import BenchmarkError
    from captum_matex.metrics import randomisation_spearman, randomized_model

    config = BenchmarkConfig(limit=3, methods=["rollout"], faithfulness=False, seed=4,
                             randomisation_draws=2, metrics=["randomisation_spearman"])
    assert config.settings()["randomisation_draws"] == 2
    assert "randomisation_draws" not in BenchmarkConfig(limit=3).settings()  # old studies resume
    run_benchmark(config, tmp_path, progress=False)
    rows = {r["sample"]: r["randomisation_spearman"] for r in _rows(tmp_path)}
    # by hand: the same maps against the randomised models of seeds 4 and 5
    model, processor = phantom_clip()
    samples = phantom_samples("test", 3, seed=4)
    pixels, _ = prepare([s.load() for s in samples], processor)
    phrases = [s.phrase for s in samples]

    def maps(net):
        return config.build("rollout", net, processor).attribute(pixels, (phrases,),
                                                                 output="pixel").detach()

    trained = maps(model)
    draws = [randomisation_spearman(trained, maps(randomized_model(model, seed=seed)))
             for seed in (4, 5)]
    assert not torch.allclose(draws[0], draws[1])  # two draws, two randomised models
    for i, sample in enumerate(samples):
        assert rows[sample.id] == pytest.approx(float(draws[0][i] + draws[1][i]) / 2, abs=1e-6)
    with pytest.raises(BenchmarkError, match="randomisation_draws must be at least 1"):
        BenchmarkConfig(randomisation_draws=0)


def test_a_limit_beyond_the_default_films_reads_further_films_and_keeps_the_first():
    default = phantom_samples("test", None, seed=4)  # the first 1000 films, normal ones dropped
    assert 800 < len(default) < 1000
    more = phantom_samples("test", len(default) + 20, seed=4)
    assert len(more) == len(default) + 20
    assert [s.id for s in more[:len(default)]] == [s.id for s in default]
    assert [s.boxes for s in more[:len(default)]] == [s.boxes for s in default]
    assert int(more[-1].id.rsplit("-", 1)[1]) >= 1000  # a film the default never reads


def test_rows_do_not_depend_on_resumes(tmp_path):
    config = BenchmarkConfig(**SMALL, sanity=False)
    run_benchmark(config, tmp_path / "full", progress=False)
    reference = _rows(tmp_path / "full")
    part = tmp_path / "part"
    run_benchmark(BenchmarkConfig(**SMALL, sanity=False), part, progress=False)
    log = part / "results.rank0.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:5]) + lines[5][:20])  # four rows kept, fifth torn
    summary = run_benchmark(config, part, progress=False)
    assert _rows(part) == reference
    assert summary["n_samples"] == {"matex": 6, "chefer": 6, "prior_only": 6}


def test_results_log_discards_rows_and_keeps_the_rest(tmp_path):
    path = tmp_path / "r.jsonl"
    log = ResultsLog(path, CONFIG)
    log.append([{"sample": str(i), "method": "m", "x": i} for i in range(4)])
    assert log.discard(lambda row: row["x"] % 2 == 1) == 2
    assert [r["x"] for r in ResultsLog(path, CONFIG).rows] == [0, 2]
    assert log.discard(lambda row: False) == 0
    with pytest.raises(ResultsFileError, match="read-only"):
        ResultsLog(path, CONFIG, read_only=True).discard(lambda row: True)


def test_rows_of_changed_samples_are_scored_again_on_resume(tmp_path):
    # stored rows whose phrase or ground truth differs from the sample as drawn
    # now (the generator was mended since) are recomputed; rows written before
    # the ground truth was recorded are compared on the other fields; all other
    # rows are kept as stored
    config = BenchmarkConfig(limit=3, methods=["chefer", "prior_only"], sanity=False,
                             faithfulness=False)
    run_benchmark(config, tmp_path, progress=False)
    log = ResultsLog(tmp_path / "results.rank0.jsonl", config.settings())
    stored = list(log.rows)
    renamed, moved, legacy = sorted({row["sample"] for row in stored})
    log.discard(lambda row: True)
    edits = {renamed: {"phrase": "an old phrase", "miou": -1.0},
             moved: {"truth": "0" * 12, "miou": -1.0}}
    log.append([{k: v for k, v in {**row, **edits.get(row["sample"], {})}.items()
                 if not (row["sample"] == legacy and k == "truth")} for row in stored])
    with pytest.warns(UserWarning, match="4 stored rows scored samples that have changed"):
        run_benchmark(config, tmp_path, progress=False)
    rows = read_rows([tmp_path / "results.rank0.jsonl"], config.settings())
    assert len(rows) == len(stored) == 6
    by_key = {(r["sample"], r["method"]): r for r in rows}
    for row in stored:
        again = by_key[row["sample"], row["method"]]
        if row["sample"] == legacy:  # the very row stored, timing included, without "truth"
            assert again == {k: v for k, v in row.items() if k != "truth"}
        else:  # scored again, on the same film, batch and phrase as the first time
            assert again["phrase"] == row["phrase"] and again["truth"] == row["truth"]
            for name in ("pointing_game", "miou", "cnr"):
                assert again[name] == pytest.approx(row[name], rel=1e-6, abs=1e-9)


def test_rescore_scores_the_named_methods_again_and_keeps_the_others(tmp_path, capsys):
    # a resume cannot see a change to a method's code; --rescore names the
    # methods to score again: their tampered rows come back as computed, the
    # other method's tampered rows stay as stored
    config = BenchmarkConfig(limit=3, methods=["chefer", "prior_only"], sanity=False,
                             faithfulness=False)
    run_benchmark(config, tmp_path, progress=False)
    log = ResultsLog(tmp_path / "results.rank0.jsonl", config.settings())
    stored = list(log.rows)
    log.discard(lambda row: True)
    log.append([{**row, "miou": -1.0} for row in stored])
    args = ["benchmark", "--limit", "3", "--methods", "chefer,prior_only", "--no-sanity",
            "--no-faithfulness", "--no-progress", "--out", str(tmp_path), "--rescore", "chefer"]
    assert main(args) == 0
    by_key = {(r["sample"], r["method"]): r
              for r in read_rows([tmp_path / "results.rank0.jsonl"], config.settings())}
    assert len(by_key) == len(stored) == 6
    for row in stored:
        again = by_key[row["sample"], row["method"]]
        if row["method"] == "prior_only":
            assert again["miou"] == -1.0
        else:  # the same film, batch and phrase as the first time
            assert again["miou"] == pytest.approx(row["miou"], rel=1e-6, abs=1e-9)
            assert row["miou"] >= 0
    assert main(args[:-1] + ["rollout"]) == 2
    assert "cannot rescore rollout: not among the study's methods" in capsys.readouterr().err


def test_the_ground_truth_digest_follows_the_boxes_to_a_hundredth_of_a_pixel():
    from captum_matex.evaluation.runner import ground_truth_digest

    sample = phantom_samples("test", 1)[0]
    box = sample.boxes[0]
    same = replace(sample, boxes=[tuple(v + 1e-4 for v in box)] + sample.boxes[1:])
    moved = replace(sample, boxes=[(box[0] + 1.0, *box[1:])] + sample.boxes[1:])
    region = replace(sample, regions={"pointing_game": [box]})
    digest = ground_truth_digest(sample)
    assert len(digest) == 12 and ground_truth_digest(same) == digest
    assert len({digest, ground_truth_digest(moved), ground_truth_digest(region)}) == 3


def test_a_changed_configuration_is_refused_without_force(tmp_path):
    run_benchmark(BenchmarkConfig(limit=2, methods=["chefer"], sanity=False,
                                  faithfulness=False), tmp_path, progress=False)
    other = BenchmarkConfig(limit=3, methods=["chefer"], sanity=False, faithfulness=False)
    with pytest.raises(ResultsFileError, match="another configuration"):
        run_benchmark(other, tmp_path, progress=False)
    run_benchmark(other, tmp_path, force=True, progress=False)
    assert (tmp_path / "results.rank0.jsonl.bak").exists() and len(_rows(tmp_path)) == 3


def test_the_atlas_goes_to_every_method_with_an_anatomical_prior():
    from captum_matex.evaluation import BenchmarkError
    from captum_matex.zoo import phantom_atlas, phantom_clip

    model, processor = phantom_clip()
    auto = BenchmarkConfig(dataset="phantom")
    for name in ("matex", "matex_with_text_prior", "prior_only"):
        assert auto.build(name, model, processor).anatomical_prior.atlas is phantom_atlas()
    assert auto.build("matex_no_anatomy", model, processor).anatomical_prior is None
    generic = BenchmarkConfig(dataset="phantom", atlas="generic").build("matex", model, processor)
    assert generic.anatomical_prior.atlas is not phantom_atlas()
    assert BenchmarkConfig(dataset="mscxr", root="x")._atlas() == "generic"
    with pytest.raises(BenchmarkError, match="atlas must be"):
        BenchmarkConfig(atlas="mni").build("matex", model, processor)


def test_cli_benchmark_prints_the_table_and_names_bad_input(tmp_path, capsys):
    args = ["benchmark", "--limit", "2", "--methods", "chefer,rollout", "--no-sanity",
            "--no-faithfulness", "--no-progress", "--out", str(tmp_path)]
    assert main(args) == 0
    assert "| rollout |" in capsys.readouterr().out
    assert main(args[:4] + ["lime"] + args[5:]) == 2
    assert "unknown method(s) lime; available:" in capsys.readouterr().err
    assert main(["benchmark", "--dataset", "mscxr", "--out", str(tmp_path / "x")]) == 2
    assert "needs root=" in capsys.readouterr().err


def _cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    return subprocess.Popen([sys.executable, "-m", "captum_matex.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)


KILLED = ["benchmark", "--limit", "10", "--batch-size", "2", "--methods", "matex,m2ib,chefer",
          "--method-kwargs", '{"m2ib": {"steps": 2, "num_samples": 2}}', "--no-progress"]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path):
    assert _cli(KILLED + ["--out", str(tmp_path / "ref")]).wait(timeout=600) == 0
    rng = random.Random(0)
    out = tmp_path / "killed"
    kills = 0
    for _ in range(4):
        process = _cli(KILLED + ["--out", str(out)])
        time.sleep(rng.uniform(4.0, 9.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 2
    done = _cli(KILLED + ["--out", str(out)])
    assert done.wait(timeout=600) == 0, done.stderr.read()
    assert _rows(out) == _rows(tmp_path / "ref")
    assert len(_rows(out)) == 30


@pytest.mark.slow
def test_two_torchrun_workers_give_the_single_process_result(tmp_path):
    args = ["benchmark", "--limit", "8", "--batch-size", "2", "--methods", "matex,chefer",
            "--no-progress"]
    assert _cli(args + ["--out", str(tmp_path / "one")]).wait(timeout=600) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
         "-m", "captum_matex.cli", *args, "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p.name for p in (tmp_path / "two").glob("results.rank*.jsonl")} == {
        "results.rank0.jsonl", "results.rank1.jsonl"}
    assert _rows(tmp_path / "two") == _rows(tmp_path / "one")
    shares = [len(ResultsLog(p, json.loads((tmp_path / "two" / "summary.json").read_text())
                             ["config"], read_only=True).rows)
              for p in sorted((tmp_path / "two").glob("results.rank*.jsonl"))]
    assert shares == [8, 8]


# --------------------------------------------------------------------------
# MS-CXR layout: a miniature copy built from phantom cases
# --------------------------------------------------------------------------
def _miniature_mscxr(root: Path, count: int, size: tuple[int, int]) -> list:
    """MS-CXR-style folder: JPEGs resized to ``size`` (H, W), boxes in their pixels."""
    phantom = PhantomCXR(split="test")
    samples = [s for s in (phantom[i] for i in range(40)) if s.boxes][:count]
    rows = []
    for i, sample in enumerate(samples):
        rel = f"files/p10/p100{i}/s5{i}/img{i}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        grey = (sample.image[0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(grey).resize((size[1], size[0]), Image.BILINEAR).save(root / rel, quality=95)
        sy, sx = size[0] / grey.shape[0], size[1] / grey.shape[1]
        for x, y, w, h in sample.boxes:
            rows.append({"dicom_id": f"d{i}", "category_name": sample.finding,
                         "label_text": sample.phrase, "path": rel, "x": x * sx, "y": y * sy,
                         "w": w * sx, "h": h * sy, "image_width": size[1],
                         "image_height": size[0], "split": "test"})
    with open(root / "MS_CXR_Local_Alignment_v1.1.0.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return samples


def test_mscxr_benchmark_scores_boxes_on_the_original_grid(tmp_path):
    samples = _miniature_mscxr(tmp_path / "mscxr", 6, (448, 336))  # 2x taller, 1.5x wider
    out = tmp_path / "out"
    summary = run_benchmark(
        BenchmarkConfig(dataset="mscxr", root=str(tmp_path / "mscxr"), split="test", limit=None,
                        methods=["matex", "prior_only"], sanity=False, faithfulness=False,
                        atlas="phantom"),  # phantom films in an MS-CXR layout
        out, progress=False)
    assert summary["n_samples"] == {"matex": 6, "prior_only": 6}
    rows = {(r["sample"], r["method"]): r for r in _rows(out)}
    ours = run_benchmark(BenchmarkConfig(limit=6, methods=["matex", "prior_only"], sanity=False,
                                         faithfulness=False), tmp_path / "phantom", progress=False)
    assert [s.phrase for s in phantom_samples("test", 6)] == [s.phrase for s in samples]
    # The same cases, stretched non-uniformly and letterboxed, score alike: maps
    # come back to each image's own grid, where its boxes are. The prior alone is a
    # broad plateau whose maximum moves between far-apart pixels of the plateau with
    # any resampling (here 1 of the 6 films with bilinear maps, 2 with bicubic ones),
    # so for it only the energy in the boxes is compared.
    for metric, method in (("pointing_game", "matex"), ("energy_pointing_game", "matex"),
                           ("energy_pointing_game", "prior_only")):
        a = summary["methods"][method][metric]["mean"]
        b = ours["methods"][method][metric]["mean"]
        assert abs(a - b) < 0.2, (metric, method, a, b)
    assert all(r["finding"] for r in rows.values())


def test_paired_differences_resample_pairs_together():
    from captum_matex.evaluation.report import paired_differences, paired_table

    rng = np.random.default_rng(0)
    base = rng.normal(0.5, 0.3, 400)  # large spread shared by both methods on each pair
    rows = [{"sample": i, "method": "a", "miou": float(v + 0.02)} for i, v in enumerate(base)]
    rows += [{"sample": i, "method": "b", "miou": float(v)} for i, v in enumerate(base)]
    paired = paired_differences(rows, "a", ["miou"])
    diff = paired["b"]["miou"]
    # the difference is 0.02 on every pair: the mean is exact to rounding and the paired
    # interval collapses onto it, although each method's own interval is ~0.06 wide
    assert diff["n"] == 400 and abs(diff["mean"] - 0.02) < 1e-9
    assert diff["ci95"][0] > 0.0199 and diff["ci95"][1] < 0.0201
    table = paired_table(paired, "a", {"miou": True}, ["miou"])
    assert "a − b" in table and "+0.020 [+0.020, +0.020] *" in table
    # a pair missing for one method, or undefined, is left out
    rows.append({"sample": 999, "method": "a", "miou": 1.0})
    rows[0]["miou"] = None
    assert paired_differences(rows, "a", ["miou"])["b"]["miou"]["n"] == 399


def test_mean_localisation_scores_average_every_sample_and_skip_undefined_ones():
    r"""The mean over all batches' samples of :func:`localisation_scores`; a
    sample without a box (undefined scores, NaN) is left out of the mean."""

    from captum_matex.baselines import AnatomyPriorOnly
    from captum_matex.evaluation.scoring import (
        localisation_scores,
        mean_localisation_scores,
        prepared_batches,
    )

    model, processor = phantom_clip()
    samples = phantom_samples("test", 5)
    samples[4] = replace(samples[4], boxes=[])
    batches = prepared_batches(samples, processor, size=2)
    assert [len(b.samples) for b in batches] == [2, 2, 1]
    explainer = AnatomyPriorOnly(model, processor)
    names = ["pointing_game", "miou"]
    means = mean_localisation_scores(explainer, batches, names)
    per_sample = {name: [] for name in names}
    for batch in batches:
        maps = explainer.attribute(batch.pixels, ([s.phrase for s in batch.samples],), output="pixel")
        for name, values in localisation_scores(maps, batch, names).items():
            per_sample[name] += values
    for name in names:
        assert np.isnan(per_sample[name][4])
        # float64 means of the same four float scores: equal up to summation order
        assert means[name] == pytest.approx(float(np.mean(per_sample[name][:4])), abs=1e-12)


def test_prepared_batches_with_the_score_hold_token_ids_and_model_scores():
    r"""With ``forward``, each batch holds its phrases' token ids (the adapter's
    tokenisation) and the model's score of each sample, as the benchmark's
    own batches do; without it, neither."""
    from captum_matex.evaluation.scoring import prepared_batches
    from captum_matex.forward import SimilarityForward

    model, processor = phantom_clip()
    forward = SimilarityForward(model, processor)
    samples = phantom_samples("test", 3)
    plain = prepared_batches(samples, processor, size=2)
    scored = prepared_batches(samples, processor, size=2, forward=forward)
    assert [b.token_ids.numel() for b in plain] == [0, 0] and [b.scores for b in plain] == [[], []]
    for batch, bare in zip(scored, plain):
        ids = forward.adapter.tokenize([s.phrase for s in batch.samples], batch.pixels.device)
        assert torch.equal(batch.token_ids, ids) and torch.equal(batch.pixels, bare.pixels)
        with torch.no_grad():
            again = forward(batch.pixels, batch.token_ids).tolist()
        # the same forward pass on the same inputs, run twice: equal up to rounding
        assert batch.scores == pytest.approx(again, abs=1e-6)
