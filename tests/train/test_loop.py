import json
import signal

import pytest
import torch
import torch.nn.functional as F
from train_helpers import FAST, TinyAux, TinyNet, data, make, numbers

from cnnlab.train import checkpoint as ck
from cnnlab.train import train
from cnnlab.train.logging import Progress, read_metrics_csv
from cnnlab.train.loop import TrainingDiverged, TrainingInterrupted, classification_loss


class StopAt(Progress):
    """Presses "Ctrl-C" after update number `at` (counted across epochs)."""

    def __init__(self, at: int):
        self.at, self.steps = at, 0

    def step(self, *args):
        self.steps += 1
        if self.steps == self.at:
            raise KeyboardInterrupt


def run(out, model=None, **kw):
    return train(model or make(), data(), out=str(out), **{**FAST, **kw})


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_run_folder_contents(tmp_path):
    res = run(tmp_path / "r")
    d = res.run_dir
    for name in ("config.yaml", "metrics.csv", "final.json", "curves.png", "confusion.png",
                 "checkpoints/last.safetensors", "checkpoints/best.safetensors",
                 "checkpoints/last.json"):
        assert (d / name).is_file(), name
    rows = read_metrics_csv(d / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert list(rows[0]) == ["epoch", "step", "train_loss", "train_acc", "test_loss", "test_top1",
                             "test_top5", "lr", "images_per_s", "seconds"]
    for row, full in zip(rows, res.metrics, strict=True):
        assert row["test_top1"] == pytest.approx(full["test_top1"], abs=1e-6)
    final = json.loads((d / "final.json").read_text())
    assert final["test_top1"] == res.metrics[-1]["test_top1"] > 90  # the bars are learnable
    assert final["best_test_top1"] == max(r["test_top1"] for r in res.metrics)
    # 256 images / batch 32 = 8 steps per epoch; the last row's lr is the cosine at step 23 of 24
    assert ck.load_checkpoint(d / "checkpoints/last.safetensors").state["step"] == 24


def test_same_seed_same_numbers(tmp_path):
    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    assert numbers(a.metrics) == numbers(b.metrics)
    same_weights(a.model, b.model)
    c = run(tmp_path / "c", seed=1)  # the data seed changes the order: different numbers
    assert numbers(c.metrics) != numbers(a.metrics)


@pytest.mark.parametrize("stop_at, where", [(11, (1, 3)),  # inside epoch 2
                                            (16, (2, 0))])  # at its very last step
def test_resume_ends_exactly_where_an_uninterrupted_run_does(tmp_path, stop_at, where):
    full = run(tmp_path / "full")
    with pytest.raises(TrainingInterrupted) as info:
        run(tmp_path / "cut", progress=StopAt(stop_at))
    last = ck.load_checkpoint(info.value.run_dir / "checkpoints/last.safetensors")
    assert (last.state["epoch"], last.state["batch"], last.state["step"]) == (*where, stop_at)
    resumed = train(TinyNet(), data(), out=str(tmp_path / "cut"), resume=True)
    assert numbers(resumed.metrics) == numbers(full.metrics)
    same_weights(resumed.model, full.model)
    assert resumed.final["test_top1"] == full.final["test_top1"]


def test_resume_refuses_changed_settings(tmp_path):
    run(tmp_path / "r", epochs=1)
    with pytest.raises(ValueError, match="lr must be 0.05 as in the run being resumed"):
        train(TinyNet(), data(), out=str(tmp_path / "r"), resume=True, lr=0.1)
    with pytest.raises(ValueError, match="already holds a run"):
        run(tmp_path / "r", epochs=1)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    # forward 1 is the meta-device fit check before training; forward 12 = epoch 2, step 3
    model = make(TinyNet, nan_after=11)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 3/8 .*too high: try lr 0.005"):
        run(tmp_path / "nan", model=model)
    last = ck.load_checkpoint(tmp_path / "nan/checkpoints/last.safetensors")
    assert last.state["epoch"] == 1
    assert all(torch.isfinite(v.float()).all() for v in last.weights.values())


def test_aux_loss_weighting():
    torch.manual_seed(0)
    y = torch.tensor([0, 1, 2])
    main, a1, a2 = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    loss, logits = classification_loss((main, a1, a2), y, 0.0, 0.3)
    expected = F.cross_entropy(main, y) + 0.3 * (F.cross_entropy(a1, y) + F.cross_entropy(a2, y))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6) and logits is main
    smooth, _ = classification_loss(main, y, 0.1, 0.3)
    assert smooth.item() == pytest.approx(F.cross_entropy(main, y, label_smoothing=0.1).item())


def test_aux_model_trains(tmp_path):
    res = run(tmp_path / "aux", model=make(TinyAux), epochs=2)
    assert res.final["test_top1"] > 80


def test_bf16_and_channels_last_run(tmp_path):
    res = run(tmp_path / "bf16", epochs=1, precision="bf16", channels_last=True,
              grad_clip=1.0, optimizer="adamw", lr=0.01, schedule="onecycle")
    assert res.metrics[0]["test_top1"] > 50


def test_evaluate_and_predict_from_the_run_folder(tmp_path):
    import cnnlab

    res = cnnlab.train("lenet5_modern", data(), out=str(tmp_path / "lenet"),
                       **{**FAST, "epochs": 1})
    train_ds, test_ds = data()
    ev = cnnlab.evaluate(res.run_dir, test_ds)
    assert ev["top1"] == pytest.approx(res.final["test_top1"])
    assert set(ev["per_class"]) == {"c0", "c1", "c2", "c3"}
    assert sum(map(sum, ev["confusion"])) == len(test_ds) == ev["images"]
    # any size / mode: an RGB 50x40 image of class 2's bar
    img = torch.zeros(3, 50, 40, dtype=torch.uint8)
    img[:, 25:37, :] = 230
    out = cnnlab.predict(res.run_dir, [img, test_ds.images[0]], topk=3)
    assert len(out) == 2 and len(out[0]["top"]) == 3
    assert sum(t["prob"] for t in out[0]["top"]) <= 1 + 1e-6
    state = ck.load_checkpoint(res.run_dir / "checkpoints/best.safetensors").state
    assert state["model"] == "lenet5_modern" and state["dataset"]["input_size"] == [1, 32, 32]


class SigintAt(Progress):
    """Sends a real SIGINT (Ctrl-C) to this process after update `at`."""

    def __init__(self, at: int):
        self.at, self.steps = at, 0

    def step(self, *args):
        import os
        import signal

        self.steps += 1
        if self.steps == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_saves_last_and_says_how_to_resume(tmp_path):
    with pytest.raises(TrainingInterrupted) as info:
        run(tmp_path / "c", progress=SigintAt(5))
    assert str(info.value) == "stopped at epoch 1, step 5/8"
    assert info.value.run_dir == tmp_path / "c" and info.value.signal == signal.SIGINT
    assert ck.load_checkpoint(tmp_path / "c/checkpoints/last.safetensors").state["step"] == 5


def test_progress_reporters_write_lines(tmp_path):
    import io

    from cnnlab.train.logging import PlainProgress, RichProgress

    for cls in (PlainProgress, RichProgress):
        buf = io.StringIO()
        run(tmp_path / cls.__name__, epochs=2, progress=cls(buf))
        text = buf.getvalue()
        assert "epoch 1/2  train loss" in text and "epoch 2/2" in text and "img/s" in text


def test_device_choice():
    from cnnlab.train.distributed import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu9")


@pytest.mark.slow
def test_compiled_model_trains_and_saves_plain_keys(tmp_path):
    res = run(tmp_path / "compiled", epochs=1, compile=True)
    weights = ck.load_checkpoint(res.run_dir / "checkpoints/last.safetensors").weights
    assert set(weights) == set(TinyNet().state_dict())  # no "_orig_mod." prefixes
