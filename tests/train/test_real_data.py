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


@pytest.mark.slow
def test_fast_mnist_recipe_reaches_99_percent_on_the_full_test_set(mnist_root, tmp_path):
    """`cnnlab train fastnet_mnist --dataset mnist --stop-at-top1 99`: the shipped fast recipe
    stops at its first evaluation at or above 99.0% of the 10,000 test digits."""
    res = cnnlab.train("fastnet_mnist", "mnist", data_dir=str(mnist_root),
                       out=str(tmp_path / "fast"), stop_at_top1=99.0)
    assert res.final["reached_target"] and res.final["test_top1"] >= 99.0
    assert sum(map(sum, res.final["confusion"])) == 10_000  # the whole test set


@pytest.mark.slow
def test_fast_cifar_recipe_reaches_93_percent(tmp_path):
    """The shipped resnet9_fast recipe to 93% on CIFAR-10 (JPEG q75 copy). On a 2-core CPU
    without AMX this takes many hours (about 25 min per epoch in fp32); on a GPU minutes."""
    res = cnnlab.train("resnet9_fast", "cifar10-jpeg", out=str(tmp_path / "fast"),
                       stop_at_top1=93.0)
    assert res.final["reached_target"] and res.final["test_top1"] >= 93.0
