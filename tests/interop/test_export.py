"""ONNX export checked in a real onnxruntime."""

import importlib.util

import pytest
import torch

import cnnlab
from cnnlab.cli import main
from cnnlab.errors import UsageError

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: "
                                          "pip install 'cnnlab[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="pip install 'cnnlab[onnx]'")
pytestmark = pytest.mark.filterwarnings("ignore")  # the exporter's deprecation chatter


def calibrated(name: str, size: int, **kw) -> torch.nn.Module:
    """A seeded model whose BatchNorm statistics match standard-normal inputs, as a trained
    network's match its data: fresh BN statistics let random ReLU nets blow logits up to ~100,
    where float32 rounding alone approaches the 1e-4 limit."""
    torch.manual_seed(0)
    model = cnnlab.create_model(name, **kw)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, model_input_channels(name), size, size))
    return model.eval()


def model_input_channels(name: str) -> int:
    return cnnlab.model_card(name).input_size[0]


def run_onnx(path, x: torch.Tensor) -> list:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


@pytest.fixture(scope="module")
def lenet5_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = cnnlab.create_model("lenet5").eval()
    path = tmp_path_factory.mktemp("onnx") / "lenet5.onnx"
    return model, cnnlab.export_onnx(model, path, input_size=(1, 32, 32))


def test_lenet5_with_its_connection_table_exports_and_agrees(lenet5_onnx):
    model, res = lenet5_onnx
    assert model.state_dict()["features.c3.weight"].shape[0] == 60  # the sparse C3 of Table I
    assert res.input_shape == (2, 1, 32, 32) and 0 <= res.max_abs_diff <= 1e-4
    onnx.checker.check_model(str(res.path))
    x = torch.randn(2, 1, 32, 32)  # an input the export never saw
    (out,) = run_onnx(res.path, x)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), atol=1e-4, rtol=0)


@pytest.mark.slow  # ~40 s: GoogLeNet's graph is large for the dynamo exporter
def test_googlenet_exports_without_aux_heads_and_with_a_dynamic_batch(tmp_path):
    model = calibrated("googlenet", 64)
    res = cnnlab.export_onnx(model, tmp_path / "g.onnx", input_size=(3, 64, 64),
                             dynamic_batch=True)
    assert res.dynamic_batch and res.max_abs_diff <= 1e-4
    graph = onnx.load(str(res.path)).graph
    assert len(graph.output) == 1  # logits only: the aux heads are training-only
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic
    stored = sum(int(torch.tensor(t.dims).prod()) for t in graph.initializer)
    with_aux = sum(p.numel() for p in model.parameters())
    without_aux = with_aux - sum(p.numel() for n, p in model.named_parameters()
                                 if n.startswith(("aux1.", "aux2.")))
    assert without_aux == 6_624_904 and stored < with_aux  # aux weights are not in the file
    x = torch.randn(5, 3, 64, 64)
    (out,) = run_onnx(res.path, x)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), atol=1e-4, rtol=0)


def test_a_file_that_computes_something_else_is_refused(lenet5_onnx):
    from cnnlab.export import OnnxMismatch, check_onnx

    torch.manual_seed(1)
    other = cnnlab.create_model("lenet5")  # other weights, same graph
    with pytest.raises(OnnxMismatch, match=r"differ from PyTorch's by up to .* \(allowed 0.0001\)"):
        check_onnx(lenet5_onnx[1].path, other, [torch.randn(2, 1, 32, 32)])


def test_cli_export_of_a_checkpoint_prints_the_difference(tmp_path, capsys):
    from cnnlab.train.checkpoint import save_checkpoint

    model = cnnlab.create_model("lenet5_modern", num_classes=4)
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "best.safetensors", model, {
        "model": "lenet5_modern", "model_kwargs": {"num_classes": 4},
        "dataset": {"name": "tiny", "classes": list("abcd"), "input_size": [1, 32, 32],
                    "mean": [0.5], "std": [0.5]}})
    out = tmp_path / "r.onnx"
    assert main(["export", str(ckpt.parents[1]), "--onnx", str(out), "--opset", "18"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"wrote {out} (opset 18, input 2x1x32x32)"
    assert lines[1].startswith("onnxruntime vs PyTorch: max abs diff ")
    assert float(lines[1].split()[-3]) <= 1e-4
    (logits,) = run_onnx(out, torch.zeros(2, 1, 32, 32))  # a fixed batch of 2, as exported
    assert logits.shape == (2, 4)  # the checkpoint's model, with its 4 classes


def test_export_of_a_model_name_uses_its_card_input(tmp_path):
    res = cnnlab.export_onnx("nin", tmp_path / "nin.onnx")
    assert res.input_shape == (2, *cnnlab.model_card("nin").input_size) == (2, 3, 32, 32)
    with pytest.raises(UsageError, match="pretrained weights for 'nin'"):
        cnnlab.export_onnx("nin", tmp_path / "x.onnx", pretrained=True)


def test_without_the_extra_the_error_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(UsageError, match=r"ONNX export needs onnxruntime: pip install "
                                         r"'cnnlab\[onnx\]'"):
        cnnlab.export_onnx("resnet20", tmp_path / "x.onnx")
    assert main(["export", "resnet20", "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "pip install 'cnnlab[onnx]'" in capsys.readouterr().err


# one model of every family, at a small input the model allows
EVERY_FAMILY = [("lenet5", 32), ("alexnet", 63), ("vgg11_bn", 32), ("nin", 32), ("googlenet", 64),
                ("resnet20", 32), ("densenet40_k12", 32), ("mobilenet_v2_050", 64),
                ("efficientnet_b0", 64), ("fastnet_mnist", 28)]


@pytest.mark.slow  # ~10-40 s per model with the dynamo exporter on 2 shared cores
@pytest.mark.parametrize(("name", "size"), EVERY_FAMILY, ids=[n for n, _ in EVERY_FAMILY])
def test_every_family_exports_and_agrees(tmp_path, name, size):
    assert {cnnlab.model_card(n).family for n, _ in EVERY_FAMILY} == {
        cnnlab.model_card(n).family for n in cnnlab.list_models()}
    model = calibrated(name, size)
    c = model_input_channels(name)
    res = cnnlab.export_onnx(model, tmp_path / f"{name}.onnx", input_size=(c, size, size))
    assert res.max_abs_diff <= 1e-4


@pytest.mark.parametrize("target, reason", [
    ("folder", "is a folder"), ("model.txt", "this file is written as .onnx"),
    ("parent-file/model.onnx", "is a file"),
])
def test_the_onnx_path_is_checked_before_any_work(tmp_path, capsys, target, reason):
    (tmp_path / "folder").mkdir()
    (tmp_path / "parent-file").write_text("x")
    assert main(["export", "lenet5", "--onnx", str(tmp_path / target)]) == 2
    err = capsys.readouterr().err.strip()
    assert reason in err and len(err.splitlines()) == 1, err
