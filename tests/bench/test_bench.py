"""`cnnlab bench` plumbing on tiny settings: the JSON schema, the FLOP / MFU arithmetic against
hand computations, the conventional pipeline's augmentation against cnnlab's, and the CLI's
errors. Never a timing assertion: speed is measured by the benchmarks themselves."""

import json

import pytest
import torch

from cnnlab.bench import common, pipeline, precision
from cnnlab.cli import main
from cnnlab.data.augment import translate

# LeNet-5 at 32x32 by hand (the analyzer counts C3 as the dense 6 -> 16 conv it computes):
# C1 6*28*28*25 + C3 16*10*10*(6*25) + C5 120*(16*25) + F6 84*120 + output 10*84
LENET5_MACS = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 120 * 400 + 84 * 120 + 10 * 84
PEAK = {"rows": [], "peak_tflops": {"fp32": 0.05, "bf16": 0.002}, "bf16_over_fp32": 0.04}


def test_flop_and_mfu_arithmetic_by_hand():
    assert LENET5_MACS == 416_520
    assert common.step_flop(416_520, 128, train=True) == 2 * 416_520 * 128 * 3 == 319_887_360
    assert common.step_flop(1_000, 4, train=False) == 8_000
    # 1 GMAC x 2 x 3 x batch 4 = 24 GFLOP in 0.5 s = 48 GFLOP/s of a 0.1 TFLOP/s peak
    assert common.utilisation(24e9, 0.5, 0.1) == pytest.approx(0.48)


def test_time_calls_counts_warmup_and_runs():
    calls = []
    t = common.time_calls(lambda: calls.append(1), torch.device("cpu"), warmup=2, runs=3,
                          budget_s=60)
    assert (len(t.warmup_s), len(t.times_s), len(calls)) == (2, 3, 5)
    calls.clear()
    t = common.time_calls(lambda: calls.append(1), torch.device("cpu"), warmup=1, runs=5,
                          budget_s=0)  # no budget left: still one timed call
    assert (len(t.warmup_s), len(t.times_s), len(calls)) == (1, 1, 2)


def test_memory_tracker_sees_a_64_mb_tensor():
    tracker = common.MemoryTracker(torch.device("cpu"))
    if tracker.baseline is None:
        pytest.skip("no /proc/self/statm here")
    with tracker.sampling():
        x = torch.ones(16 * 2**20)  # 64 MiB of float32, touched
        assert x[-1] == 1
    del x
    assert 60 <= tracker.added_mb < 400


def test_precision_suite_rows_schema_and_mfu(tmp_path):
    report = precision.run(torch.device("cpu"), quick=True, models=["lenet5"],
                           modes=["channels_last", "bf16", "best"], peak=PEAK)
    assert report["suite"] == "precision" and report["modes"] == [
        "eager", "channels_last", "bf16", "best"]
    assert {"cpu", "cores", "torch", "threads", "date_utc", "device"} <= set(report["machine"])
    rows = {(r["mode"], r["figure"]): r for r in report["rows"]}
    assert {f for _, f in rows} == {"latency", "throughput", "train"}
    # a combination slower than a single setting keeps its own row ("combination")
    assert {"eager", "channels_last", "bf16", "best"} <= {m for m, _ in rows} <= {
        "eager", "channels_last", "bf16", "best", "combination", "best_failed"}
    for (_, figure), r in rows.items():
        assert r["model"] == "lenet5" and r["input_size"] == [1, 32, 32]
        assert r["macs_per_image"] == LENET5_MACS
        # quick batches: 512 / 8 for throughput, 128 / 8 for training
        assert r["batch"] == {"latency": 1, "throughput": 64, "train": 16}[figure]
        if r["skipped"]:
            assert r["median_s"] is None
            continue
        assert r["runs"] >= 1 and len(r["warmup_s"]) == 1
        flop = 2 * LENET5_MACS * r["batch"] * (3 if figure == "train" else 1)
        assert r["flop_per_call"] == flop
        assert r["mfu"] == pytest.approx(flop / r["median_s"] / 0.05e12, rel=2e-3)
        own = 0.002 if r["precision"] == "bf16" else 0.05
        assert r["mfu_own_dtype"] == pytest.approx(flop / r["median_s"] / (own * 1e12), rel=2e-3)
        assert r["images_per_s"] == pytest.approx(r["batch"] / r["median_s"], rel=1e-3)
        eager = rows[("eager", figure)]
        assert r["ratio"] == pytest.approx(eager["median_s"] / r["median_s"], rel=2e-3)
        assert r["memory_kind"] == "rss"
    for figure in ("latency", "throughput", "train"):
        assert rows[("eager", figure)]["ratio"] == 1.0
        assert rows[("bf16", figure)]["precision"] == "bf16"
        best = rows[("best", figure)]
        others = [r["ratio"] for (m, f), r in rows.items()
                  if f == figure and m != "best" and r["ratio"]]
        if "best_of_measured" in best:  # a copy of the fastest setting measured
            assert best["ratio"] == max(others)
        else:  # the combination, measured, and faster than every single setting
            assert best["ratio"] >= max(others)
    text = precision.markdown(report)
    assert text.count("| lenet5 | 1x32x32 |") == 3 and "| lenet5 | 16 | 0.04 |" in text


def test_a_setting_predicted_too_slow_is_skipped_with_the_reason():
    # a bf16 peak 10,000x below fp32 predicts every bf16 call far over the quick budget
    slow_bf16 = {**PEAK, "peak_tflops": {"fp32": 0.05, "bf16": 0.05 / 10_000}}
    report = precision.run(torch.device("cpu"), quick=True, models=["lenet5"], modes=["bf16"],
                           peak=slow_bf16)
    bf16 = [r for r in report["rows"] if r["mode"] == "bf16"]
    # latency first: eager's time x 10,000 exceeds the 5 s budget whatever the machine's load
    assert bf16[0]["figure"] == "latency" and bf16[0]["skipped"].startswith("predicted")
    assert all(r["median_s"] is None for r in bf16)


@pytest.mark.parametrize("top, left, flip", [(0, 0, False), (4, 4, True), (8, 1, False),
                                             (2, 7, True)])
def test_per_sample_crop_is_cnnlabs_translation(top, left, flip):
    """torchvision-style RandomCrop(padding=4) at (top, left) = cnnlab's shift by (4 - top,
    4 - left): the two pipelines draw from the same augmentation."""
    x = torch.rand(3, 32, 32)
    ours = translate(x[None], torch.tensor([4 - top]), torch.tensor([4 - left]))[0]
    ours = ours.flip(-1) if flip else ours
    torch.testing.assert_close(pipeline.crop_flip_sample(x, top, left, flip, 4), ours,
                               rtol=0, atol=0)


# Expected batch mean after pad-4 crop and normalisation: a shift d uniform in -4..4 leaves
# E|d| / 32 = (20 / 9) / 32 of each axis outside the image, so 1 - (1 - 0.0694)^2 = 13.4% of the
# pixels are padding zeros, normalised to -mean/std = -2.00, -1.99, -1.71 (R, G, B; the catalog's
# stats), the rest average 0: 0.134 x -1.90 = -0.255.
PADDED_MEAN = -(1 - (1 - 20 / 9 / 32) ** 2) * (0.4913 / 0.2452 + 0.4821 / 0.2428
                                              + 0.4465 / 0.2606) / 3


def test_pipeline_suite_on_cifar10_jpeg(data_dir):
    report = pipeline.run(torch.device("cpu"), quick=True, data_dir=data_dir)
    assert [r["workers"] for r in report["rows"]][0] is None
    assert {r["workers"] for r in report["rows"][1:]} >= {0}
    for r in report["rows"]:
        assert r["images"] == 8 * 512
        assert r["images_per_s"] == pytest.approx(r["images"] / r["seconds"], rel=2e-3)
        mean, std = r["first_batch_mean_std"]
        assert abs(mean - PADDED_MEAN) < 0.1 and 0.9 < std < 1.3
    assert report["rows"][0]["ratio_cnnlab_over_this"] == 1.0
    assert "| cnnlab batched, on device | - | 4,096 |" in pipeline.markdown(report)


def test_cli_peak_writes_json_and_markdown(tmp_path, capsys):
    assert main(["bench", "peak", "--quick", "--quiet", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "peak.json").read_text())
    assert report["schema"] == "cnnlab.bench/1" and report["suite"] == "peak"
    assert set(report["peak_tflops"]) == {"fp32", "bf16"}
    for r in report["rows"]:  # rate x time per call = the 2 n^3 FLOP of one call
        assert r["tflops"] * 1e12 * r["seconds_per_call"] == pytest.approx(2 * r["n"] ** 3,
                                                                            rel=0.02)
    assert report["peak_tflops"]["fp32"] == max(r["tflops"] for r in report["rows"]
                                                if r["dtype"] == "fp32")
    assert (tmp_path / "peak.md").read_text().startswith("# Matmul peak (cpu)")
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("argv, reason", [
    (["precision", "--models", "resnet21"], "unknown model 'resnet21'; did you mean"),
    (["precision", "--modes", "fast"], "--modes fast: must be one of eager, channels_last, "
                                       "bf16, compile, best"),
    (["peak", "--models", "lenet5"], "--models is an option of the precision suite"),
    (["pipeline", "--modes", "bf16"], "--modes is an option of the precision suite"),
    (["peak", "--device", "cuda:x"], "unknown device"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, reason):
    assert main(["bench", *argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and reason in err and err.startswith("cnnlab bench: error:")
    assert not (tmp_path / "r").exists()  # nothing was measured or written


def test_an_out_path_that_is_a_file_exits_2(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["bench", "peak", "--quick", "--out", str(tmp_path / "f")]) == 2
    assert "is an existing file, not a folder" in capsys.readouterr().err


def test_an_unknown_suite_is_argparse_exit_2(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["bench", "speed"])
    assert stop.value.code == 2 and "invalid choice: 'speed'" in capsys.readouterr().err
