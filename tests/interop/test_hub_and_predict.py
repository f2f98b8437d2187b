"""torch.hub with source="local", and predict on published weights."""

import importlib.util
from pathlib import Path

import pytest
import torch
from interop_helpers import sha256, torchvision_file
from PIL import Image

import cnnlab
from cnnlab.cli import main
from cnnlab.data import read_image
from cnnlab.errors import UsageError
from cnnlab.models import weights as W

REPO = str(Path(__file__).resolve().parents[2])  # the folder that holds hubconf.py


@pytest.fixture
def cached(cache, catalog_row, seeded_model):
    """`put(name)`: a seeded model's weights in the cache as the catalog's file -> the model."""

    def put(name: str) -> torch.nn.Module:
        model = seeded_model(name)
        path = cache / W.find_weights(name).file
        torchvision_file(model, path)
        catalog_row(name, sha256(path))
        return model

    return put


@pytest.fixture
def photo(tmp_path) -> Path:
    """A 70 x 50 RGB image with structure (a gradient and a block), saved as PNG."""
    gen = torch.Generator().manual_seed(0)
    img = torch.zeros(50, 70, 3, dtype=torch.uint8)
    img[..., 0] = torch.arange(70, dtype=torch.uint8) * 3
    img[10:40, 20:50, 1] = 200
    img[..., 2] = torch.randint(0, 60, (50, 70), generator=gen, dtype=torch.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(img.numpy()).save(path)
    return path


def _hubconf():
    spec = importlib.util.spec_from_file_location("hubconf", Path(REPO) / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hubconf_has_an_entry_point_for_every_registered_model():
    hub = _hubconf()  # torch.hub.list's rule: public callables (it has no source="local")
    entries = [n for n in dir(hub) if callable(getattr(hub, n)) and not n.startswith("_")]
    assert sorted(entries) == sorted(cnnlab.list_models())
    assert "IMAGENET1K_V1 (76.1% top-1), IMAGENET1K_V2 (80.9% top-1)" in hub.resnet50.__doc__


def test_hub_load_passes_options_through():
    torch.manual_seed(0)
    model = torch.hub.load(REPO, "resnet20", source="local", num_classes=7)
    torch.manual_seed(0)
    direct = cnnlab.create_model("resnet20", num_classes=7)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 direct.state_dict().values(), strict=True))


def test_hub_load_pretrained(cached):
    source = cached("mobilenet_v2")
    model = torch.hub.load(REPO, "mobilenet_v2", source="local", pretrained=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())


def test_predict_applies_the_weights_preprocessing_and_names_imagenet_classes(cached, photo):
    model = cached("mobilenet_v2")
    res = cnnlab.predict("mobilenet_v2", [photo], pretrained=True, topk=3)
    # the same by hand (its V2 weights): short side 50 -> 232 (70 -> 324), centre 224 crop,
    # ImageNet mean/std
    img = read_image(photo).float()[None]
    x = torch.nn.functional.interpolate(img, size=(232, 324), mode="bilinear", antialias=True)
    x = x.round().clamp(0, 255)[..., 4:228, 50:274] / 255
    x = (x - torch.tensor(W.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        W.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    top = probs.topk(3)
    names = W.imagenet_classes()
    assert [t["class"] for t in res[0]["top"]] == [names[i] for i in top.indices.tolist()]
    assert [t["index"] for t in res[0]["top"]] == top.indices.tolist()
    torch.testing.assert_close(torch.tensor([t["prob"] for t in res[0]["top"]]), top.values)


def test_predict_googlenet_feeds_google_normalisation(cached, photo):
    model = cached("googlenet")
    res = cnnlab.predict("googlenet", photo, pretrained=True, topk=1)
    plain = W.Preprocessing(resize=256, crop=224, mean=(0.5,) * 3, std=(0.5,) * 3)
    with torch.no_grad():
        want = model(plain(read_image(photo))[None]).softmax(1)[0].max()
    assert res[0]["top"][0]["prob"] == pytest.approx(want.item(), rel=1e-5)


def test_cli_predict_pretrained_prints_class_names(cached, photo, capsys):
    cached("mobilenet_v2")
    assert main(["predict", "mobilenet_v2", "--pretrained", str(photo), "--topk", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{photo}: ")
    first = cnnlab.predict("mobilenet_v2", photo, pretrained=True, topk=2)[0]["top"]
    assert line == f"{photo}: " + "  ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in first)


def test_predict_model_name_without_weights_or_checkpoint_with_weights_is_refused(photo, tmp_path):
    with pytest.raises(UsageError, match="its weights would be random"):
        cnnlab.predict("resnet18", photo)
    with pytest.raises(UsageError, match="not a registered model"):
        cnnlab.predict(tmp_path, photo, pretrained=True)
