"""Training on real MNIST: a fast check on a subset, and the full demo recipe (slow)."""

import pytest

import cnnlab


def test_lenet5_modern_on_5k_mnist_one_epoch(mnist_root, tmp_path):
    # 156 AdamW steps on the first 5,000 training images; measured 90.75% on the first 2,000
    # test images (seed 0); the threshold leaves room for other CPUs' arithmetic
    res = cnnlab.train("lenet5_modern", "mnist", data_dir=str(mnist_root), out=str(tmp_path / "r"),
                       use_recipe=False, epochs=1, train_subset=5000, test_subset=2000,
                       batch_size=32, optimizer="adamw", lr=0.002, weight_decay=0.01,
                       schedule="constant", threads=1)
    assert res.final["test_top1"] > 88.0


@pytest.mark.slow
def test_demo_recipe_reaches_99_percent(mnist_root, tmp_path):
    """`make demo`: the shipped lenet5-mnist recipe, unchanged."""
    res = cnnlab.train("lenet5", "mnist", data_dir=str(mnist_root), out=str(tmp_path / "demo"))
    assert res.final["test_top1"] >= 99.0
