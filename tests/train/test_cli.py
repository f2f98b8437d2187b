import json

import pytest
from PIL import Image
from train_helpers import synthetic

from cnnlab.cli import main


@pytest.fixture
def folder(tmp_path):
    """A tiny image-folder dataset: train/<class>/*.png and test/<class>/*.png."""
    root = tmp_path / "bars"
    for split, n, seed in (("train", 128, 0), ("test", 32, 1)):
        ds = synthetic(n, seed, split)
        for i, (img, label) in enumerate(zip(ds.images, ds.labels, strict=True)):
            d = root / split / f"c{int(label)}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[0].numpy()).save(d / f"{i}.png")
    return root


@pytest.mark.parametrize("argv, reason", [
    (["train", "resnet21", "--dataset", "mnist"], "unknown model 'resnet21'; did you mean"),
    (["train", "lenet5", "--dataset", "mnits"], "mnist"),
    (["train", "lenet5"], "--dataset is required"),
    (["train", "lenet5", "--dataset", "mnist", "--config", "nope.yaml"], "config file not found"),
    (["train", "lenet5", "--dataset", "mnist", "--lr", "-1"], "--lr -1.0: must be positive"),
    (["train", "lenet5", "--dataset", "mnist", "--resume", "--out", "none"], "nothing to resume"),
    (["train", "lenet5", "--dataset", "mnist", "--image-size", "28"],
     "--image-size 28: must be at least lenet5's minimum input of 32"),
    (["eval", "no/such/run", "--dataset", "mnist"], "no such run folder or checkpoint"),
    (["predict", "no/such/run", "x.png"], "no such run folder or checkpoint"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, monkeypatch, capsys, argv, reason):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert reason in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()  # nothing half-made


def test_bad_flag_value_is_argparse_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "lenet5", "--dataset", "mnist", "--epochs", "many"])
    assert info.value.code == 2 and "--epochs" in capsys.readouterr().err


def test_train_eval_predict_on_an_image_folder(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "lenet5_modern", "--dataset", str(folder), "--out", str(out),
                 "--epochs", "4", "--batch-size", "16", "--optimizer", "adamw", "--lr", "0.003",
                 "--threads", "1",
                 "--progress", "plain"]) == 0
    text = capsys.readouterr().out
    assert "epoch 4/4" in text and f"run folder:  {out}" in text and "best.safetensors" in text
    assert main(["eval", str(out), "--json"]) == 0  # dataset: the one it trained on
    ev = json.loads(capsys.readouterr().out)
    final = json.loads((out / "final.json").read_text())
    assert ev["top1"] == pytest.approx(final["best_test_top1"]) and ev["images"] == 32
    img = next((folder / "test" / "c1").glob("*.png"))
    rgb = tmp_path / "big.jpg"
    Image.open(img).convert("RGB").resize((57, 41)).save(rgb)  # other size and mode
    assert main(["predict", str(out / "checkpoints" / "last.safetensors"), str(img), str(rgb),
                 "--topk", "2", "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert [p["image"] for p in pred] == [str(img), str(rgb)]
    assert all(len(p["top"]) == 2 for p in pred)
    assert pred[0]["top"][0]["class"] == "c1"
    assert main(["predict", str(out), str(tmp_path / "missing.png")]) == 2


def test_sigterm_saves_last_exits_143_and_prints_the_resume_command(mnist_root, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "term"
    env = {**os.environ, "CNNLAB_DATA": str(mnist_root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "train", "lenet5", "--dataset",
                             "mnist", "--out", str(out), "--progress", "plain", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().startswith("training lenet5")  # the loop has started
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert f"Resume with: cnnlab train lenet5 --dataset mnist --out {out} --resume" in err
    state = json.loads((out / "checkpoints" / "last.json").read_text())
    assert state["step"] > 0 and state["epoch"] == 0 and state["batch"] == state["step"]


@pytest.mark.parametrize("flag, value, reason", [
    ("--momentum", "5", "--momentum 5.0: must be in [0, 1)"),
    ("--workers", "-3", "--workers -3: must be at least 0"),
    ("--gamma", "-1", "--gamma -1.0: must be positive"),
    ("--seed", "-1", "--seed -1: must be at least 0"),
    ("--eval-every", "0", "--eval-every 0.0: must be positive"),
    ("--stop-at-top1", "101", "--stop-at-top1 101.0: must be a percentage in (0, 100]"),
])
def test_settings_are_range_checked_and_worded_as_flags(capsys, flag, value, reason):
    assert main(["train", "lenet5", "--dataset", "mnist", flag, value]) == 2
    assert capsys.readouterr().err.strip() == f"cnnlab train: error: {reason}"


def test_resume_needs_out(capsys):
    assert main(["train", "lenet5", "--dataset", "mnist", "--resume"]) == 2
    assert "--resume needs --out RUN_DIR" in capsys.readouterr().err
