"""--tensorboard: the event files hold every step's and every row's numbers, the graph and the
confusion matrix; read back with TensorBoard's own reader."""

import pytest
from train_helpers import FAST, data, make, numbers

from cnnlab.train import Callback, train

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="the tensorboard extra is not installed (pip install 'cnnlab[tensorboard]')")


class Losses(Callback):
    def __init__(self):
        self.values = []

    def on_step_end(self, step):
        self.values.append((step.index + 1, step.loss_value, step.lr))


def test_event_files_hold_the_runs_numbers(tmp_path):
    losses = Losses()
    res = train(make(), data(), out=str(tmp_path / "tb"), tensorboard=True, callbacks=[losses],
                **{**FAST, "epochs": 2})
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tb/tensorboard"),
                                             size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [n for n, _, _ in losses.values] == list(range(1, 17))
    assert [e.value for e in loss] == pytest.approx([v for _, v, _ in losses.values], rel=1e-6)
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx(
        [lr for _, _, lr in losses.values], rel=1e-6)
    assert {"train/acc", "train/images_per_s"} <= set(tags["scalars"])
    top1 = acc.Scalars("epoch/test_top1")
    assert [e.step for e in top1] == [8, 16]
    assert [e.value for e in top1] == pytest.approx([r["test_top1"] for r in res.metrics])
    assert tags["graph"] is True
    (image,) = acc.Images("confusion_matrix")
    assert image.width > 100 and image.height > 100 and image.step == 16
    # logging (the graph's eval-mode trace included) leaves the run's arithmetic unchanged
    plain = train(make(), data(), **{**FAST, "epochs": 2})
    assert numbers(plain.metrics) == numbers(res.metrics)


def test_tensorboard_needs_a_run_folder():
    with pytest.raises(ValueError, match="tensorboard must be used with a run folder"):
        train(make(), data(), tensorboard=True, **FAST)
