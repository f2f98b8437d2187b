"""Pretrained weights: catalog facts, cache, download from a local server, refusal, offline."""

import re
import socket
import zipfile

import pytest
import torch
from interop_helpers import sha256, torchvision_file
from safetensors.torch import save_file

import cnnlab
from cnnlab.cli import main
from cnnlab.errors import UsageError, WeightsError, WeightsMismatch
from cnnlab.models import weights as W

TORCHVISION_LAYOUT_WITH_WEIGHTS = {
    "alexnet", "googlenet", "mobilenet_v2",
    *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
    *(f"resnet{d}" for d in (18, 34, 50, 101, 152)),
    *(f"densenet{d}" for d in (121, 161, 169, 201)),
    *(f"efficientnet_b{i}" for i in range(8))}


# ---- the catalog ------------------------------------------------------------------------------

def test_every_torchvision_layout_row_has_exactly_one_default():
    assert {w.model for w in W.CATALOG} == TORCHVISION_LAYOUT_WITH_WEIGHTS
    for name in TORCHVISION_LAYOUT_WITH_WEIGHTS:
        assert sum(w.default for w in W.weights_of(name)) == 1, name
        assert cnnlab.model_card(name).torchvision_compatible
        assert cnnlab.model_card(name).weights == W.weights_of(name)  # the card carries them


def test_digests_agree_with_torchvision_file_names_and_urls_are_official():
    for w in W.CATALOG:
        prefix = re.search(r"-([0-9a-f]{8,})\.pth$", w.file).group(1)
        assert re.fullmatch(r"[0-9a-f]{8}|[0-9a-f]{64}", w.sha256), w.file
        assert w.sha256.startswith(prefix) or prefix.startswith(w.sha256), w.file
        assert w.url == "https://download.pytorch.org/models/" + w.file
    assert sum(w.full_hash for w in W.CATALOG) == 24  # 9 of 33 publish only the prefix
    assert len({w.file for w in W.CATALOG}) == len(W.CATALOG)


def test_defaults_and_tags_follow_torchvision():
    assert W.find_weights("resnet50").tag == "IMAGENET1K_V2"
    assert W.find_weights("resnet50").preprocessing == W.Preprocessing(resize=232, crop=224)
    v1 = W.find_weights("resnet50", "IMAGENET1K_V1")
    assert (v1.file, v1.top1, v1.preprocessing.resize) == ("resnet50-0676ba61.pth", 76.13, 256)
    b3 = W.find_weights("efficientnet_b3").preprocessing
    assert (b3.resize, b3.crop, b3.interpolation) == (320, 300, "bicubic")
    assert W.find_weights("googlenet").preprocessing.transform_input
    with pytest.raises(UsageError, match=r"resnet50 has no weights 'V9'; available: "
                                          r"IMAGENET1K_V1, IMAGENET1K_V2"):
        W.find_weights("resnet50", "V9")
    with pytest.raises(UsageError, match="no pretrained weights for 'resnet20'"):
        cnnlab.create_model("resnet20", pretrained=True)


def test_imagenet_class_names_ship_with_the_package():
    names = W.imagenet_classes()
    assert len(names) == len(set(names)) == 1000
    assert (names[0], names[1], names[281], names[285], names[999]) == (
        "tench", "goldfish", "tabby", "Egyptian cat", "toilet tissue")


# ---- preprocessing ----------------------------------------------------------------------------

def test_preprocessing_resizes_the_short_side_crops_the_centre_and_normalises():
    pre = W.Preprocessing(resize=256, crop=224)
    grey = torch.full((3, 300, 400), 128, dtype=torch.uint8)
    out = pre(grey)
    assert out.shape == (3, 224, 224)
    for c in range(3):  # a flat image stays flat: (128/255 - mean) / std, per channel
        expected = (128 / 255 - W.IMAGENET_MEAN[c]) / W.IMAGENET_STD[c]
        torch.testing.assert_close(out[c], torch.full((224, 224), expected), atol=1e-6, rtol=0)
    # a wide image keeps its centre: columns 0..199 dark, 200..399 bright -> after the resize
    # to 256 x 341 and the centre crop, the edge sits at 341/2 - 58 = 112.5 of 224
    two = torch.zeros(3, 300, 400, dtype=torch.uint8)
    two[:, :, 200:] = 255
    row = pre(two)[0, 112]
    assert (row[:111] < 0).all() and (row[114:] > 0).all()


def test_googlenet_transform_input_is_google_normalisation():
    pre = W.find_weights("googlenet").preprocessing
    assert pre.normalization() == ((0.5,) * 3, (0.5,) * 3)
    white = pre(torch.full((3, 256, 256), 255, dtype=torch.uint8))
    black = pre(torch.zeros(3, 256, 256, dtype=torch.uint8))
    assert torch.all(white == 1.0) and torch.all(black == -1.0)


# ---- cache, download, refusal, offline ------------------------------------------------------

def test_a_torchvision_format_densenet_file_in_the_cache_loads_unchanged(
        cache, catalog_row, seeded_model):
    source = seeded_model("densenet121")
    path = cache / "densenet121-a639ec97.pth"
    saved = torchvision_file(source, path, legacy_densenet=True)
    assert zipfile.is_zipfile(path)
    assert "features.denseblock1.denselayer1.norm.1.weight" in saved  # the legacy names
    assert not any(".norm1." in k for k in saved)
    catalog_row("densenet121", sha256(path))

    model = cnnlab.create_model("densenet121", pretrained=True)
    ours = model.state_dict()
    assert list(ours) == list(source.state_dict())
    assert all(torch.equal(ours[k], v) for k, v in source.state_dict().items())


def test_download_from_a_local_http_server(cache, catalog_row, seeded_model, http_server,
                                           monkeypatch):
    source = seeded_model("mobilenet_v2")
    served = http_server.root / "mobilenet_v2-7ebf99e0.pth"
    torchvision_file(source, served)
    catalog_row("mobilenet_v2", sha256(served))
    monkeypatch.setenv("CNNLAB_WEIGHTS_URL", http_server.url)

    model = cnnlab.create_model("mobilenet_v2", pretrained=True)
    assert http_server.requests == ["/mobilenet_v2-7ebf99e0.pth"]
    assert (cache / served.name).read_bytes() == served.read_bytes()
    assert list(cache.iterdir()) == [cache / served.name]  # no temporary left behind
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), source(x), rtol=0, atol=0)

    cnnlab.create_model("mobilenet_v2", pretrained=True)  # second time: from the cache
    assert len(http_server.requests) == 1


def test_a_tampered_download_is_refused_and_nothing_is_kept(cache, catalog_row, seeded_model,
                                                           http_server, monkeypatch):
    served = http_server.root / "mobilenet_v2-7ebf99e0.pth"
    torchvision_file(seeded_model("mobilenet_v2"), served)
    catalog_row("mobilenet_v2", sha256(served))
    data = bytearray(served.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a tensor
    served.write_bytes(bytes(data))
    monkeypatch.setenv("CNNLAB_WEIGHTS_URL", http_server.url)
    with pytest.raises(WeightsError) as err:
        cnnlab.create_model("mobilenet_v2", pretrained=True)
    assert str(err.value).startswith(f"mobilenet_v2-7ebf99e0.pth downloaded from {http_server.url}"
                                     f"mobilenet_v2-7ebf99e0.pth: refusing it: SHA-256 mismatch")
    assert "Nothing was saved" in str(err.value)
    assert not cache.exists() or not any(cache.iterdir())


def test_a_tampered_file_in_the_cache_is_refused(cache, catalog_row, seeded_model):
    path = cache / "mobilenet_v2-7ebf99e0.pth"
    torchvision_file(seeded_model("mobilenet_v2"), path)
    row = catalog_row("mobilenet_v2", sha256(path))
    with open(path, "r+b") as fh:  # same size, one byte changed
        fh.seek(path.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(WeightsError) as err:
        cnnlab.create_model("mobilenet_v2", pretrained=True)
    assert f"expected {row.sha256}, got {sha256(path)}" in str(err.value)
    assert str(err.value).startswith(f"{path}: refusing it")


def test_only_the_prefix_is_checked_where_only_the_prefix_is_published(cache, catalog_row,
                                                                      seeded_model):
    path = cache / "mobilenet_v2-7ebf99e0.pth"
    torchvision_file(seeded_model("mobilenet_v2"), path)
    catalog_row("mobilenet_v2", sha256(path)[:8])
    cnnlab.create_model("mobilenet_v2", pretrained=True)  # the right 8 digits: accepted
    catalog_row("mobilenet_v2", "0" * 8 if not sha256(path).startswith("0") else "1" * 8)
    with pytest.raises(WeightsError, match=r"SHA-256 prefix \(from the file name\) mismatch"):
        cnnlab.create_model("mobilenet_v2", pretrained=True)


def test_torch_hub_cache_copy_is_used(cache, catalog_row, seeded_model, tmp_path):
    source = seeded_model("mobilenet_v2")
    hub_copy = tmp_path / "torch-home" / "hub" / "checkpoints" / "mobilenet_v2-7ebf99e0.pth"
    torchvision_file(source, hub_copy)
    catalog_row("mobilenet_v2", sha256(hub_copy))
    model = cnnlab.create_model("mobilenet_v2", pretrained=True)
    assert torch.equal(model.classifier[-1].weight, source.classifier[-1].weight)
    assert not cache.exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_error_names_the_file_its_url_and_where_to_put_it(cache, monkeypatch, capsys,
                                                                 tmp_path):
    monkeypatch.setenv("CNNLAB_WEIGHTS_URL", f"http://127.0.0.1:{_closed_port()}/")
    with pytest.raises(WeightsError) as err:
        cnnlab.create_model("resnet50", pretrained=True)
    lines = str(err.value).splitlines()
    assert lines[0] == ("pretrained weights resnet50-11ad3fa6.pth are not here and could not be "
                        "downloaded")
    assert "  download: https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in lines
    assert f"  put it at {cache / 'resnet50-11ad3fa6.pth'}" in lines
    assert err.value.file == "resnet50-11ad3fa6.pth" and err.value.path == (
        cache / "resnet50-11ad3fa6.pth")

    image = tmp_path / "cat.png"
    from PIL import Image
    Image.new("RGB", (40, 30), (200, 120, 40)).save(image)
    assert main(["predict", "resnet50", "--pretrained", str(image)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("cnnlab predict: error: pretrained weights resnet50-11ad3fa6.pth")
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in stderr


def test_builds_the_file_cannot_fill_are_refused_before_any_download(cache):
    with pytest.raises(UsageError, match=r"1000 ImageNet classes, not 10.*reset_classifier"):
        cnnlab.create_model("resnet18", pretrained=True, num_classes=10)
    with pytest.raises(UsageError, match="in_chans=1"):
        cnnlab.create_model("resnet18", pretrained=True, in_chans=1)
    assert not cache.exists()


# ---- load_weights -----------------------------------------------------------------------------

def test_load_weights_reads_pth_and_safetensors(tmp_path, seeded_model):
    source = seeded_model("resnet20")
    pth, st = tmp_path / "w.pth", tmp_path / "w.safetensors"
    torch.save(source.state_dict(), pth)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(st))
    for path in (pth, st):
        target = cnnlab.create_model("resnet20")
        report = cnnlab.load_weights(target, path)
        assert report.ok and report.loaded == len(source.state_dict())
        assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())


def test_pth_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": zipfile.ZipInfo("x")}, path)
    with pytest.raises(UsageError, match="weights_only=True"):
        cnnlab.load_weights(cnnlab.create_model("resnet20"), path)


def test_mismatches_are_one_table_and_strict_false_loads_what_fits(seeded_model):
    source = seeded_model("resnet20").state_dict()
    state = dict(source)
    del state["conv1.weight"]  # missing
    state["extra.bias"] = torch.zeros(3)  # unexpected
    state["fc.weight"] = torch.zeros(5, 64)  # another shape (5 classes, not 10)
    target = cnnlab.create_model("resnet20")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(WeightsMismatch) as err:
        cnnlab.load_weights(target, state)
    assert str(err.value).splitlines() == [
        "the weights do not fit the model (3 keys: 1 missing, 1 unexpected, 1 of another shape)",
        "problem     key           model              weights",
        "missing     conv1.weight  in the model only",
        "unexpected  extra.bias                       in the weights only",
        "shape       fc.weight     10x64              5x64"]
    assert all(torch.equal(target.state_dict()[k], v) for k, v in before.items())  # untouched

    report = cnnlab.load_weights(target, state, strict=False)
    assert (report.missing, report.unexpected) == (["conv1.weight"], ["extra.bias"])
    assert report.mismatched == [("fc.weight", (10, 64), (5, 64))]
    got = target.state_dict()
    assert torch.equal(got["layer1.0.conv1.weight"], source["layer1.0.conv1.weight"])
    assert torch.equal(got["conv1.weight"], before["conv1.weight"])
