"""The `zoo` experiment end to end on its test profile (the six networks the takeaways compare),
with the reduced nets' parameters and MACs counted by hand."""

import json

from cnnlab import cli
from cnnlab.experiments.zoo import TAKEAWAY_NETS, _pairs_to_5x5, build, variant


def conv(c_in, c_out, k, bias=True):
    return c_in * c_out * k * k + (c_out if bias else 0)


def test_pairs_to_5x5_replaces_each_pair_once():
    assert _pairs_to_5x5((64, "M", 128, "M", 256, 256, "M", 512, 512, 512, "M")) == (
        64, "M", 128, "M", (256, 5), "M", (512, 5), 512, "M")


def test_zoo_tiny_from_the_cli(real_data, tmp_path, capsys, monkeypatch):
    from cnnlab.experiments.zoo import EXPERIMENT

    monkeypatch.setitem(EXPERIMENT.profiles, "quick", EXPERIMENT.profiles["test"])
    out = tmp_path / "zoo"
    assert cli.main(["experiment", "zoo", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"report: {out / 'report.md'}"
    results = json.loads((out / "results.json").read_text())
    runs = results["subruns"]
    params = {k: runs[f"train-{k}"]["params"] for k in TAKEAWAY_NETS}

    # VGG-11 (A) + BN at 1/8 width (8, 16, 32, 32, 64, 64, 64, 64), fc 64 -> 512 -> 512 -> 10
    widths = (8, 16, 32, 32, 64, 64, 64, 64)
    convs = sum(conv(a, b, 3) for a, b in zip((1,) + widths[:-1], widths, strict=True))
    head = (64 * 512 + 512) + (512 * 512 + 512) + (512 * 10 + 10)
    assert params["vgg11"] == convs + 2 * sum(widths) + head == 446_170
    # the control: one 5x5 for each pair (32, 64 and 64 channels)
    widths5 = (8, 16, 32, 64, 64)
    convs5 = conv(1, 8, 3) + conv(8, 16, 3) + conv(16, 32, 5) + conv(32, 64, 5) + conv(64, 64, 5)
    assert params["vgg11-5x5"] == convs5 + 2 * sum(widths5) + head == 469_242
    # VGG-11/8 MACs at 32 px: conv maps 32, 16, 8, 8, 4, 4, 2, 2, then the three linear layers
    maps = (32, 16, 8, 8, 4, 4, 2, 2)
    macs = sum(m * m * a * b * 9 for m, a, b in zip(maps, (1,) + widths[:-1], widths,
                                                    strict=True))
    assert runs["train-vgg11"]["macs"] == macs + 64 * 512 + 512 * 512 + 512 * 10 == 2_733_056

    # ResNet-20 (option A: no parameters in the shortcuts) at widths 8-16-32, BN after each conv
    res = (conv(1, 8, 3, False) + 6 * conv(8, 8, 3, False) + conv(8, 16, 3, False)
           + 5 * conv(16, 16, 3, False) + conv(16, 32, 3, False) + 5 * conv(32, 32, 3, False)
           + 2 * (8 * 7 + 16 * 6 + 32 * 6) + 32 * 10 + 10)
    assert params["resnet"] == params["plain"] == res == 67_906

    # DenseNet-BC-22, k = 8: each layer BN(c), 1x1 c -> 32, BN(32), 3x3 32 -> 8 (no biases);
    # blocks of 3 layers from 16, 20 and 22 channels; transitions BN + 1x1 halving 40 and 44
    def block(c):
        return sum(2 * (c + 8 * i) + 32 * (c + 8 * i) + 64 + 32 * 9 * 8 for i in range(3))
    dense = (9 * 16 + block(16) + 2 * 40 + 40 * 20 + block(20) + 2 * 44 + 44 * 22 + block(22)
             + 2 * 46 + 46 * 10 + 10)
    assert params["densenet"] == dense == 32_318
    # the takeaways' sizes as the notes have them: DenseNet needs ~2x fewer parameters here
    assert params["densenet"] < params["resnet"] / 2

    # every network's count equals the sum over its built parameters
    s = EXPERIMENT.profiles["test"]
    for key in TAKEAWAY_NETS:
        model, size = build(key, s)
        assert sum(p.numel() for p in model.parameters()) == params[key]
        side = variant(key, s)[1]
        assert runs[f"train-{key}"]["input_size"] == [1, side, side]

    table = results["table"]
    assert len(table["columns"]) == 9 and len(table["rows"]) == len(TAKEAWAY_NETS)
    assert [r[0] for r in table["rows"]] == list(TAKEAWAY_NETS)
    assert all(0 <= r[7] <= 100 and r[6] > 0 for r in table["rows"])
    checks = results["numbers"]["takeaways"]
    assert [c["a"] for c in checks] == ["vgg11", "googlenet", "resnet", "densenet"]
    assert all(c["se"] > 0 and isinstance(c["holds"], bool) for c in checks)
    held = sum(c["holds"] for c in checks)
    assert results["verdict"] == ("reproduced" if held == 4 else "partly" if held
                                  else "not reproduced")
    assert all(v > 0 for v in results["subruns"]["throughput"]["images_per_second"].values())
    assert (out / "zoo-scatter.png").stat().st_size > 5000


def test_googlenet_width_mult_thins_every_table_column():
    from cnnlab.models.googlenet import GoogLeNet

    m = GoogLeNet(num_classes=10, in_chans=1, aux_logits=False, width_mult=0.25)
    # Table 1 / 4: 3a = 64 + 128 + 32 + 32 = 256 -> 64; 5b = 384 + 384 + 128 + 128 -> 256
    assert m.inception3a.out_channels == 16 + 32 + 8 + 8
    assert m.num_features == m.inception5b.out_channels == 96 + 96 + 32 + 32
    assert m.conv1.conv.out_channels == 16 and m.conv3.conv.out_channels == 48
    assert m.inception3a.branch3[0].conv.out_channels == 4  # 5x5 reduce 16 / 4


def test_the_full_profile_trains_every_family_at_full_size():
    import torch

    from cnnlab.experiments.zoo import EXPERIMENT, NETWORKS
    from cnnlab.models import create_model

    s = EXPERIMENT.profiles["full"]
    assert s["scale"] == "paper" and s.get("networks") is None
    # the registered rows themselves (10 classes, 1 channel), at their design inputs
    rows = {"alexnet": ("alexnet", 224), "vgg11": ("vgg11_bn", 224), "nin": ("nin", 32),
            "googlenet": ("googlenet", 224), "resnet": ("resnet110", 32),
            "plain": ("plain110", 32), "densenet": ("densenet_bc100_k12", 32),
            "mobilenet_v1": ("mobilenet_v1", 224), "mobilenet_v2": ("mobilenet_v2", 224),
            "efficientnet_b0": ("efficientnet_b0", 224)}
    with torch.device("meta"):
        for key, (name, side) in rows.items():
            model, size = build(key, s)
            reference = create_model(name, num_classes=10, in_chans=1)
            assert size == (1, side, side)
            assert [p.shape for p in model.parameters()] == [
                p.shape for p in reference.parameters()], key
    assert set(rows) | {"lenet5", "vgg11-5x5"} == set(NETWORKS)
