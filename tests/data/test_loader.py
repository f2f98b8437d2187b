"""DeviceLoader / StreamLoader / make_loader: exact batches, determinism, resizing, sharding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlab.data import (
    Augment,
    DeviceLoader,
    StreamLoader,
    load_dataset,
    make_loader,
    to_model_input,
)
from cnnlab.data.dataset import ArrayDataset
from cnnlab.data.loader import convert_stats, epoch_generator


def _toy(n=10, c=1, h=6, w=6, seed=0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    mean, std = (0.5,) * c, (0.25,) * c
    return ArrayDataset("toy", "train", images, torch.arange(n) % 3, ["a", "b", "c"], mean, std,
                        hflip=True)


def _epoch(loader):
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_plain_batches_are_exactly_normalised():
    ds = _toy()
    loader = DeviceLoader(ds, 4, shuffle=False, augment=None)
    assert len(loader) == 3
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x, y = _epoch(loader)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.allclose(x, (ds.images.float() / 255 - 0.5) / 0.25)
    assert torch.equal(y, ds.labels)
    dropped = DeviceLoader(ds, 4, shuffle=False, augment=None, drop_last=True)
    assert len(dropped) == 2 and len(_epoch(dropped)[1]) == 8


def test_shuffle_is_a_function_of_seed_and_epoch():
    ds = _toy(n=50)
    ds.labels = torch.arange(50)  # sample ids
    a = DeviceLoader(ds, 8, shuffle=True, augment=Augment(crop_padding=1, hflip=True), seed=3)
    epochs = [_epoch(a) for _ in range(3)]  # the epoch advances after each full pass
    for _, ids in epochs:
        assert sorted(ids.tolist()) == list(range(50))  # every sample once
    assert not torch.equal(epochs[0][1], epochs[1][1])
    b = DeviceLoader(ds, 8, shuffle=True, augment=Augment(crop_padding=1, hflip=True), seed=3)
    b.set_epoch(2)  # a resumed run: same batches as the uninterrupted one
    x, y = _epoch(b)
    assert torch.equal(x, epochs[2][0]) and torch.equal(y, epochs[2][1])
    c = DeviceLoader(ds, 8, shuffle=True, augment=None, seed=3)  # augmentation never changes order
    assert torch.equal(_epoch(c)[1], epochs[0][1])
    d = DeviceLoader(ds, 8, shuffle=True, augment=None, seed=4)
    assert not torch.equal(_epoch(d)[1], epochs[0][1])


def test_pad_28_to_32_like_lenet():
    ds = _toy(n=3, h=28, w=28)
    x, _ = _epoch(DeviceLoader(ds, 3, shuffle=False, augment=None, image_size=32))
    assert x.shape == (3, 1, 32, 32)
    inner = (ds.images.float() / 255 - 0.5) / 0.25
    assert torch.allclose(x[:, :, 2:30, 2:30], inner)
    border = x.clone()
    border[:, :, 2:30, 2:30] = -2.0
    assert torch.all(border == -2.0)  # zero pixels, normalised: (0 - 0.5) / 0.25


@pytest.mark.parametrize("size", [56, 3])
def test_resize_is_bilinear_with_antialias_when_shrinking(size):
    ds = _toy(n=2, h=12, w=12)
    x, _ = _epoch(DeviceLoader(ds, 2, shuffle=False, augment=None, image_size=size))
    ref = F.interpolate(ds.images.float() / 255, size=(size, size), mode="bilinear",
                        align_corners=False, antialias=size < 12)
    assert torch.allclose(x, (ref - 0.5) / 0.25, atol=1e-5)


def test_channel_conversion():
    grey = _toy(n=2)
    x, _ = _epoch(DeviceLoader(grey, 2, shuffle=False, augment=None, channels=3))
    assert x.shape == (2, 3, 6, 6)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    rgb = _toy(n=2, c=3)
    x, _ = _epoch(DeviceLoader(rgb, 2, shuffle=False, augment=None, channels=1))
    luma = (rgb.images.float() / 255 * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(
        1, keepdim=True)
    mean, std = convert_stats(rgb.mean, rgb.std, 1)
    assert torch.allclose(x, (luma - mean[0]) / std[0], atol=1e-5)
    assert convert_stats((0.1,), (0.2,), 3) == ((0.1,) * 3, (0.2,) * 3)


def test_sharding_across_ranks():
    ds = _toy(n=11)
    ds.labels = torch.arange(11)  # labels = sample ids, to see which samples each rank gets
    perm = torch.randperm(11, generator=epoch_generator(1, 0, 0))
    # evaluation: disjoint shards that cover every sample exactly once
    seen = []
    for rank in range(3):
        loader = DeviceLoader(ds, 2, shuffle=True, augment=None, seed=1, rank=rank, world_size=3)
        assert len(loader) == 2  # 4, 4 and 3 samples in batches of 2
        ids = _epoch(loader)[1]
        assert torch.equal(ids, perm[rank::3])
        seen.append(ids)
    assert sorted(torch.cat(seen).tolist()) == list(range(11))
    # training: whole global batches of 2 x 3; batch i of all ranks = global batch i
    shards = [_epoch(DeviceLoader(ds, 2, shuffle=True, augment=None, seed=1, drop_last=True,
                                  rank=r, world_size=3))[1] for r in range(3)]
    assert [len(s) for s in shards] == [2, 2, 2]  # one global batch of 6; 5 samples dropped
    assert sorted(torch.cat(shards).tolist()) == sorted(perm[:6].tolist())


def test_stream_loader_matches_device_loader(tmp_path, make_folder):
    make_folder(tmp_path, sizes=((8, 8),), per_class=5)
    memory = load_dataset(tmp_path, "train")
    stream = load_dataset(tmp_path, "train", in_memory=False)
    aug = Augment(crop_padding=2, hflip=True, cutout=3)
    for workers in (0, 2):
        a = make_loader(memory, 4, train=True, augment=aug, seed=7, workers=workers)
        b = make_loader(stream, 4, train=True, augment=aug, seed=7, workers=workers)
        assert isinstance(a, DeviceLoader) and isinstance(b, StreamLoader)
        assert len(a) == len(b) == 2  # 10 images, the last partial batch dropped in training
        xa, ya = _epoch(a)
        xb, yb = _epoch(b)
        assert torch.equal(ya, yb) and torch.allclose(xa, xb)


def test_make_loader_train_and_eval():
    ds = _toy(n=10)
    train = make_loader(ds, 4, train=True, augment="default", device="cpu", seed=0,
                        image_size=None, channels=None)
    assert train.shuffle and train.drop_last and len(train) == 2
    assert train.transform.augment == Augment.default_for(ds)
    ev = make_loader(ds, 4, train=False, augment="default", device="cpu", seed=0,
                     image_size=None, channels=None)
    assert not ev.shuffle and not ev.drop_last and ev.transform.augment is None
    assert torch.equal(_epoch(ev)[1], ds.labels)
    with pytest.raises(ValueError, match="augment must be"):
        make_loader(ds, 4, train=True, augment="heavy")


def test_real_cifar_like_epoch_shapes(real_data):
    ds = load_dataset("fashion-mnist", "test")
    loader = make_loader(ds, 500, train=True, augment="default", seed=0, device="cpu",
                         image_size=32, channels=3)
    x, y = next(iter(loader))
    assert x.shape == (500, 3, 32, 32) and y.shape == (500,)
    assert abs(x[:, :, 2:30, 2:30].mean().item()) < 0.3  # roughly normalised


def test_to_model_input_matches_the_eval_loader():
    ds = _toy(n=3, h=28, w=28)
    x, _ = _epoch(DeviceLoader(ds, 3, shuffle=False, augment=None, image_size=32, channels=3))
    single = to_model_input(ds.images[1], ds.mean, ds.std, channels=3, image_size=32)
    assert single.shape == (3, 32, 32) and torch.equal(single, x[1])
    assert torch.equal(to_model_input(ds.images, ds.mean, ds.std, channels=3, image_size=32), x)


def test_to_model_input_accepts_images_in_another_mode_than_the_training_data():
    grey = torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8)
    rgb_of_grey = grey.expand(3, -1, -1)
    rgba = torch.cat([rgb_of_grey, torch.full((1, 8, 8), 255, dtype=torch.uint8)])
    # RGB-trained stats: a grey image is repeated, an alpha channel dropped
    mean3, std3 = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)
    expected = to_model_input(rgb_of_grey, mean3, std3)
    torch.testing.assert_close(to_model_input(grey, mean3, std3), expected)
    torch.testing.assert_close(to_model_input(rgba, mean3, std3), expected)
    # grey-trained stats: an RGB image of equal channels has luma equal to that channel
    torch.testing.assert_close(to_model_input(rgb_of_grey, (0.5,), (0.25,)),
                               to_model_input(grey, (0.5,), (0.25,)))


def test_streaming_and_device_loaders_shard_alike(tmp_path, make_folder):
    make_folder(tmp_path, sizes=((8, 8),), per_class=5)
    memory = load_dataset(tmp_path, "train")
    stream = load_dataset(tmp_path, "train", in_memory=False)
    for train in (True, False):
        shards = []
        for rank in range(2):
            kw = dict(train=train, seed=3, workers=0, rank=rank, world_size=2)
            xa, ya = _epoch(make_loader(memory, 2, **kw))
            xb, yb = _epoch(make_loader(stream, 2, **kw))
            assert torch.equal(ya, yb) and torch.allclose(xa, xb)  # the same images
            shards.append(xa)
        # training: 2 global batches of 2 x 2 (2 of 10 dropped); evaluation: all 10, once
        assert sum(len(s) for s in shards) == (8 if train else 10)
