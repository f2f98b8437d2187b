"""The `cnnlab` command: argument parsing only; each subcommand calls one public function.

Exit status: 0 on success, 2 on bad input (one-line reason on stderr), 1 on an unexpected failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from cnnlab.errors import UsageError

_python_showwarning = warnings.showwarning


def _input_size(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(t) for t in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W (e.g. 3,224,224), got {text!r}") from None
    if len(dims) == 1:  # a single number means a square RGB input
        dims = (3, dims[0], dims[0])
    if len(dims) == 2:
        dims = (3, *dims)
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W with positive sizes, got {text!r}")
    return dims


# ---- models / info ---------------------------------------------------------------------------

def _cmd_models(args) -> int:
    from cnnlab.models import list_models, model_card

    cards = [model_card(n) for n in list_models(args.pattern)]
    if not cards:
        raise UsageError(f"no model matches {args.pattern!r}; try `cnnlab models`")
    if args.json:
        print(json.dumps([c.to_dict() for c in cards], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cnnlab model zoo ({len(cards)} models)")
    for col in ("name", "family", "year", "params", "input", "follows", "key idea"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for c in cards:
        params = f"{c.params:,}" if c.params else "-"
        table.add_row(c.name, c.family, str(c.year), params, "x".join(map(str, c.input_size)),
                      c.follows, c.key_idea)
    # piped output has no terminal width to fit: keep one line per model
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    return 0


def _cmd_info(args) -> int:
    from cnnlab.models import model_card

    card = model_card(args.model)
    if args.json:
        print(json.dumps(card.to_dict(), indent=2))
        return 0
    width = max(len(k) for k in card.to_dict())
    for key, value in card.to_dict().items():
        if isinstance(value, int) and not isinstance(value, bool) and value > 9999:
            value = f"{value:,}"
        print(f"{key:<{width}}  {value}")
    return 0


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo with each model's card")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("info", help="one model's card: paper, year, input, params, key idea")
    p.add_argument("model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)


# ---- data -------------------------------------------------------------------------------------

def _cmd_data(args) -> int:
    from cnnlab.data import catalog

    for name in args.names:
        catalog.get_spec(name)  # unknown names fail before any work
    if args.action == "download":
        if not args.names:
            raise UsageError("name the datasets to download, e.g. `cnnlab data download mnist`")
        for name in args.names:
            print(f"{name}: ok ({catalog.ensure_dataset(name, args.data_dir)})")
        return 0
    names = args.names or catalog.list_datasets()
    rows = []
    for name in names:
        rows.append({"name": name, **catalog.get_spec(name).split_sizes,
                     "status": catalog.dataset_status(name, args.data_dir),
                     "path": str(catalog.dataset_dir(name, args.data_dir))})
    if args.action == "list":
        return _print_data_list(rows, args.json)
    problems = []
    for row in rows:  # verify
        if row["status"] == "missing" and not args.names:
            print(f"{row['name']}: not present in {row['path']} (skipped)")
            continue
        for file, state, reason in catalog.verify_dataset(row["name"], args.data_dir):
            print(f"{row['name']}/{file}: {state}" + ("" if state == "ok" else f" - {reason}"))
            if state != "ok":
                problems.append(f"{row['name']}/{file} {state}")
    if problems:
        raise UsageError(f"{len(problems)} file(s) missing or corrupt: {', '.join(problems)}")
    return 0


def _print_data_list(rows: list[dict], as_json: bool) -> int:
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="cnnlab datasets")
    for col in ("name", "train", "test", "status", "path"):
        table.add_column(col, justify="right" if col in ("train", "test") else "left")
    for r in rows:
        table.add_row(r["name"], f"{r['train']:,}", f"{r['test']:,}", r["status"], r["path"])
    Console().print(table)
    return 0


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="list, download or verify the catalog datasets")
    p.add_argument("action", choices=("list", "download", "verify"))
    p.add_argument("names", nargs="*", metavar="NAME", help="catalog names (default: all)")
    p.add_argument("--data-dir", help="dataset root (default: $CNNLAB_DATA, ~/.cache/cnnlab)")
    p.add_argument("--json", action="store_true", help="machine-readable `list` output")
    p.set_defaults(func=_cmd_data)


# ---- analysis: summary / compare ---------------------------------------------------------------

def _cmd_summary(args) -> int:
    from cnnlab.analysis import summarize

    summary = summarize(args.model, args.input, train=args.train, batch=args.batch,
                        dtype=args.dtype, optimizer=args.optimizer)
    if args.json:  # schema "cnnlab.summary/2": see the README's "Analysis conventions"
        print(json.dumps(summary.to_dict(args.depth), indent=2))
    elif args.csv:
        sys.stdout.write(summary.to_csv(args.depth))
    elif args.by_op:
        print(summary.render_by_op())
    else:
        print(summary.render(3 if args.depth is None else args.depth or None, args.op_costs))
    return 0


def _cmd_compare(args) -> int:
    from cnnlab.analysis import compare

    if args.plot:  # before the work: a bad path is a one-line error, not a lost result
        from cnnlab.outputs import check_output_file

        check_output_file(args.plot, (".png",))
    rows = compare(args.models, args.input)
    if args.plot:
        from cnnlab.report import plot_params_vs_macs

        args.plot = plot_params_vs_macs(rows, args.plot)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from cnnlab.analysis.summary import format_table, si_units

    head = ("model", "input", "params", "MACs", "depth", "RF", "paper result")
    body = [(r["model"], "x".join(map(str, r["input_size"])), f"{r['params']:,}",
             si_units(r["macs"]), str(r["depth"]),
             "x".join(map(str, r["receptive_field"])) if r["receptive_field"] else "-",
             r["paper_result"] or "-") for r in rows]
    print("\n".join(line.rstrip() for line in format_table(head, body, "<>>>>><")))
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def _add_analysis(sub) -> None:
    p = sub.add_parser("summary", help="per-layer table: shapes, params, MACs, receptive fields")
    p.add_argument("model")
    p.add_argument("--input", type=_input_size, metavar="C,H,W",
                   help="input size (default: the model card's)")
    p.add_argument("--depth", type=_nonnegative_int, metavar="N",
                   help="fold layers to N name components (table default 3, 0 = all layers; "
                        "--json/--csv default: all layers)")
    p.add_argument("--train", action="store_true",
                   help="run in train() mode (batch 2): includes training-only branches such as "
                        "auxiliary heads, and checks that the input is large enough for them")
    p.add_argument("--batch", type=_positive_int, metavar="N",
                   help="estimate the memory of a training step at batch N")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="activation precision of that estimate (weights stay fp32)")
    p.add_argument("--optimizer", choices=("sgd", "sgd_momentum", "adamw"),
                   default="sgd_momentum", help="optimizer state of that estimate")
    p.add_argument("--op-costs", action="store_true",
                   help="add BN / activation / pooling / element-wise op columns to the table")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="stable schema cnnlab.summary/2")
    fmt.add_argument("--csv", action="store_true", help="one row per layer")
    fmt.add_argument("--by-op", action="store_true",
                     help="one row per ATen operation: calls, MACs, other op costs, bytes")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("compare", help="params, MACs, depth, receptive field of several models")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--input", type=_input_size, metavar="C,H,W",
                   help="one input size for all (default: each model card's)")
    p.add_argument("--plot", metavar="FILE.png", help="params vs MACs, log scales")
    p.add_argument("--json", action="store_true", help="machine-readable rows")
    p.set_defaults(func=_cmd_compare)


# ---- training: train / eval / predict ---------------------------------------------------------

def _cmd_train(args) -> int:
    from cnnlab.train import TrainingInterrupted, default_out, train
    from cnnlab.train.config import flags_to_overrides
    from cnnlab.train.distributed import from_environment

    overrides = flags_to_overrides(args)
    dataset = overrides.pop("dataset", None)
    overrides.pop("model", None)
    if dataset is None:
        raise UsageError("--dataset is required (a catalog name from `cnnlab data list` "
                         "or an image folder)")
    if args.resume and not overrides.get("out"):
        raise UsageError("--resume needs --out RUN_DIR (the run to continue)")
    overrides.setdefault("out", str(default_out(args.model, dataset)))
    main_rank = from_environment().is_main
    progress = None if args.progress == "none" or not main_rank else args.progress
    try:
        result = train(args.model, dataset, config=args.config, use_recipe=not args.no_recipe,
                       resume=args.resume, progress=progress, **overrides)
    except TrainingInterrupted as stop:
        if main_rank:
            launcher = (f"torchrun --nproc_per_node={stop.world_size} -m cnnlab"
                        if stop.world_size > 1 else "cnnlab")
            print(f"cnnlab train: {stop.where}; saved {stop.run_dir}/checkpoints/last.safetensors."
                  f" Resume with: {launcher} train {stop.model} --dataset {stop.dataset} "
                  f"--out {stop.run_dir} --resume", file=sys.stderr)
        return 128 + int(stop.signal)
    if not main_rank:
        return 0
    f = result.final
    print(f"test top-1 {f['test_top1']:.2f}%  top-5 {f['test_top5']:.2f}%  loss "
          f"{f['test_loss']:.4f}  (best top-1 {f['best_test_top1']:.2f}% at epoch "
          f"{f['best_epoch']:g}; {f['wall_seconds']:.0f} s)")
    if f["target_top1"] is not None:
        print(f"target top-1 {f['target_top1']:g}%: " + (
            f"reached after {f['seconds_to_target']:.1f} s ({f['epochs_to_target']:g} epochs)"
            if f["reached_target"] else "not reached"))
    print(f"run folder:  {result.run_dir}  (config.yaml, metrics.csv, final.json)")
    print(f"checkpoints: {f['checkpoints']['best']}  {f['checkpoints']['last']}")
    print(f"plots:       {f['plots']['curves']}  {f['plots']['confusion']}")
    return 0


def _cmd_eval(args) -> int:
    from cnnlab.train import evaluate

    res = evaluate(args.checkpoint, args.dataset, split=args.split, data_dir=args.data_dir,
                   batch_size=args.batch_size, device=args.device, precision=args.precision)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{res['dataset']} {res['split']} ({res['images']} images) with {res['checkpoint']} "
          f"({res['precision']})")
    print(f"top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%  loss {res['loss']:.4f}")
    width = max(len(c) for c in res["per_class"])
    for cls, acc in res["per_class"].items():
        print(f"  {cls:<{width}}  {acc:6.2f}%")
    return 0


def _cmd_predict(args) -> int:
    from cnnlab.train import predict

    res = predict(args.checkpoint, args.images, topk=args.topk, device=args.device,
                  pretrained=args.weights or args.pretrained)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    for item in res:
        tops = "  ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in item["top"])
        print(f"{item['image']}: {tops}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _add_training(sub) -> None:
    from cnnlab.train.config import add_config_flags

    p = sub.add_parser("train", help="train a model on a dataset (shipped recipe when one exists)",
                       description="Train MODEL on --dataset. Settings: defaults < the shipped "
                       "recipe cnnlab/configs/MODEL-DATASET.yaml (or --config FILE) < flags.")
    p.add_argument("model", help="registered model name (cnnlab models)")
    p.add_argument("--config", metavar="FILE", help="YAML settings used instead of the recipe")
    p.add_argument("--no-recipe", action="store_true", help="ignore the shipped recipe")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its "
                   "last checkpoint (ends exactly where an uninterrupted run would)")
    p.add_argument("--progress", choices=("auto", "rich", "plain", "none"), default="auto",
                   help="auto: a live bar on a terminal, one line per epoch otherwise")
    add_config_flags(p, skip=("model",))
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="top-1 / top-5 / loss / per-class accuracy of a checkpoint")
    p.add_argument("checkpoint", help="a run folder (uses its best checkpoint) or a .safetensors")
    p.add_argument("--dataset", help="dataset name or folder (default: the one it trained on)")
    p.add_argument("--split", default="test")
    p.add_argument("--data-dir")
    p.add_argument("--batch-size", type=_positive_int, default=500)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="default: the precision the run trained in")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="top-k classes with probabilities for image files")
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT_OR_MODEL",
                   help="a run folder (uses its best checkpoint), a .safetensors, or a model "
                        "name with --pretrained")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    _add_pretrained_flags(p)
    p.add_argument("--topk", type=_positive_int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_predict)


def _wording(err: UsageError) -> str:
    """A library error in the command's terms: settings become the flags that set them."""
    from cnnlab.errors import InvalidSetting
    from cnnlab.train.loop import TrainingDiverged

    if isinstance(err, InvalidSetting) and err.source is None:
        value = ",".join(f"{v:g}" for v in err.value) if isinstance(err.value, list) else err.value
        return f"--{err.field.replace('_', '-')} {value}: must be {err.allowed}"
    if isinstance(err, TrainingDiverged):
        return f"{err.summary}: try --lr {err.suggested_lr:.3g}, --warmup-epochs 1 or --grad-clip 1"
    return str(err)


# ---- parser ----------------------------------------------------------------------------------

def _add_pretrained_flags(p) -> None:
    """--pretrained / --weights: shared by predict and export."""
    p.add_argument("--pretrained", action="store_true",
                   help="use the model's published ImageNet weights (downloaded once, verified)")
    p.add_argument("--weights", metavar="TAG",
                   help="a named set of published weights, e.g. IMAGENET1K_V1 (implies "
                        "--pretrained; `cnnlab info MODEL` lists them)")


# ---- export -----------------------------------------------------------------------------------

def _cmd_export(args) -> int:
    from cnnlab.export import export_onnx

    res = export_onnx(args.source, args.onnx, opset=args.opset, dynamic_batch=args.dynamic_batch,
                      input_size=args.input, pretrained=args.weights or args.pretrained)
    shape = "x".join(map(str, res.input_shape))
    batch = "dynamic batch, " if res.dynamic_batch else ""
    print(f"wrote {res.path} (opset {res.opset}, {batch}input {shape})")
    print(f"onnxruntime vs PyTorch: max abs diff {res.max_abs_diff:.2e} (limit 1e-4)")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write an ONNX file and check it in onnxruntime",
                       description="Export to ONNX with torch.onnx, run the file in onnxruntime "
                       "on the same input and check max |difference| <= 1e-4. Needs the onnx "
                       "extra: pip install 'cnnlab[onnx]'.")
    p.add_argument("source", metavar="RUN_OR_CHECKPOINT_OR_MODEL")
    p.add_argument("--onnx", metavar="FILE", required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=_positive_int, help="ONNX opset (default: the exporter's)")
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension")
    p.add_argument("--input", type=_input_size, metavar="C,H,W",
                   help="input size (default: the model's, the weights' or the training size)")
    _add_pretrained_flags(p)
    p.set_defaults(func=_cmd_export)


# ---- inside: show / explain ---------------------------------------------------------------------

_VIEWS = ("filters", "features", "saliency", "receptive-field", "diagram", "misclassified")


def _cmd_show(args) -> int:
    from pathlib import Path

    from cnnlab import inside
    from cnnlab.outputs import check_output_file

    source, pretrained = args.source, args.weights or args.pretrained
    out = args.out or f"{Path(source).name}-{args.view}.png"
    check_output_file(out, (".png", ".svg") if args.view == "diagram" else (".png",))  # first
    picture = dict(image=args.image, index=args.index, dataset=args.dataset,
                   data_dir=args.data_dir)
    if args.view == "filters":
        paths = [inside.show_filters(source, out, layer=args.layer, pretrained=pretrained)]
    elif args.view == "features":
        layers = [n for n in (args.layers or "").split(",") if n] or None
        paths = [inside.show_features(source, out, layers=layers, maps=args.maps,
                                      pretrained=pretrained, **picture)]
    elif args.view == "saliency":
        paths = [inside.show_saliency(source, out, topk=args.topk, layer=args.layer,
                                      pretrained=pretrained, **picture)]
    elif args.view == "receptive-field":
        paths = [inside.show_receptive_field(source, out, layer=args.layer,
                                             position=args.position, pretrained=pretrained,
                                             **picture)]
    elif args.view == "diagram":
        paths = inside.show_diagram(source, out, input_size=args.input, pretrained=pretrained)
    else:
        if pretrained:
            raise UsageError("misclassified needs a trained run or checkpoint and its test set")
        paths = [inside.show_misclassified(source, out, count=args.count, dataset=args.dataset,
                                           data_dir=args.data_dir)]
    for path in paths:
        print(f"wrote {path}")
    return 0


def _position(text: str) -> tuple[int, int]:
    try:
        row, col = (int(t) for t in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROW,COL (e.g. 4,4), got {text!r}") from None
    return row, col


def _count(text: str, name: str, least: int = 1) -> int:
    """An integer option of `explain`, checked here so a bad one is a one-line error."""
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--{name} must be an integer, got {text!r}") from None
    if value < least:
        raise UsageError(f"--{name} must be at least {least}, got {value}")
    return value


def _grid_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise UsageError(f"--input must be N or HxW (e.g. 5x5), got {text!r}")
    return _count(parts[0], "input"), _count(parts[1], "input")


def _cmd_explain(args) -> int:
    from cnnlab.inside import explain_bottleneck, explain_conv, explain_pool

    if args.what == "conv":
        print(explain_conv(_grid_size(args.input), _count(args.kernel, "kernel"),
                           stride=_count(args.stride, "stride"),
                           padding=_count(args.padding, "padding", 0),
                           dilation=_count(args.dilation, "dilation"),
                           in_channels=_count(args.in_channels, "in-channels"),
                           out_channels=_count(args.out_channels, "out-channels")))
    elif args.what == "pool":
        print(explain_pool(_grid_size(args.input), _count(args.kernel, "kernel"),
                           stride=None if args.stride is None else _count(args.stride, "stride"),
                           padding=_count(args.padding, "padding", 0), mode=args.mode))
    else:
        print(explain_bottleneck(_count(args.channels, "channels"), _count(args.width, "width"),
                                 _count(args.size, "size")))
    return 0


def _add_inside(sub) -> None:
    p = sub.add_parser("show", help="pictures inside a network: filters, feature maps, saliency, "
                       "receptive fields, diagrams, mistakes",
                       description="Draw one view of a run folder, a checkpoint or a model name "
                       "(random weights, or --pretrained) as a PNG (diagram: PNG and SVG).")
    p.add_argument("view", choices=_VIEWS)
    p.add_argument("source", metavar="RUN_OR_CHECKPOINT_OR_MODEL")
    p.add_argument("--out", metavar="FILE.png", help="default: <source>-<view>.png here")
    _add_pretrained_flags(p)
    p.add_argument("--layer", help="module path, e.g. layer2.0.conv1 (filters: default the first "
                   "conv; saliency: the last feature map; receptive-field: the deepest stage end "
                   "whose field fits the image)")
    p.add_argument("--layers", metavar="A,B", help="features: module paths (default: the end of "
                   "the stem and of each stage)")
    p.add_argument("--maps", type=_positive_int, default=12, help="features: maps per layer")
    p.add_argument("--image", metavar="FILE", help="an image file instead of a dataset image")
    p.add_argument("--index", type=_nonnegative_int, default=0,
                   help="which test image (default 0)")
    p.add_argument("--dataset", help="take images from this dataset (default: the run's)")
    p.add_argument("--data-dir")
    p.add_argument("--topk", type=_positive_int, default=3, help="saliency: classes to explain")
    p.add_argument("--position", type=_position, metavar="ROW,COL",
                   help="receptive-field: the unit (default: the centre of the map)")
    p.add_argument("--count", type=_positive_int, default=24,
                   help="misclassified: images to show")
    p.add_argument("--input", type=_input_size, metavar="C,H,W",
                   help="diagram: input size (default: the model's)")
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("explain", help="worked examples: conv, pool, 1x1 bottleneck",
                       description="Print a worked example in the lecture notes' style.")
    what = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    q = what.add_parser("conv", help="a convolution, cell by cell, with the size formula")
    q.add_argument("--input", default="5x5", help="N or HxW (at most 12x12)")
    q.add_argument("--kernel", default="3")
    q.add_argument("--stride", default="1")
    q.add_argument("--padding", default="0")
    q.add_argument("--dilation", default="1")
    q.add_argument("--in-channels", default="1", help="for the parameter count")
    q.add_argument("--out-channels", default="1", help="for the parameter count")
    q = what.add_parser("pool", help="max or average pooling, window by window")
    q.add_argument("--input", default="4x4")
    q.add_argument("--kernel", default="2")
    q.add_argument("--stride", help="default: the kernel size")
    q.add_argument("--padding", default="0")
    q.add_argument("--mode", choices=("max", "avg"), default="max")
    q = what.add_parser("bottleneck", help="1x1 reduce / 3x3 / 1x1 expand vs a plain 3x3")
    q.add_argument("--channels", default="256")
    q.add_argument("--width", default="64", help="channels inside the bottleneck")
    q.add_argument("--size", default="56", help="map height = width")
    p.set_defaults(func=_cmd_explain)


# ---- experiments: list / index / NAME -----------------------------------------------------------

def _cmd_experiment(args) -> int:
    from cnnlab.experiments import describe_experiments, get_experiment, run_experiment
    from cnnlab.experiments.base import default_out

    if args.name == "list":
        rows = describe_experiments()
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            width = max(len(r["name"]) for r in rows)
            for r in rows:
                print(f"{r['name']:<{width}}  {r['claim']}")
        return 0
    if args.name == "index":
        from cnnlab.experiments.index import write_index

        print(write_index(args.out or "docs/experiments"))
        return 0
    get_experiment(args.name)  # an unknown name fails before any work
    tty = sys.stderr.isatty()

    def show(line: str) -> None:  # one line, redrawn in place on a terminal
        print(f"\r{line}\033[K" if tty else line, end="" if tty else "\n", file=sys.stderr,
              flush=True)

    try:
        report = run_experiment(args.name, profile=args.profile, out=args.out, seed=args.seed,
                                progress=None if args.quiet else show)
    except KeyboardInterrupt:
        where = args.out or default_out(args.name, args.profile)
        print(f"\ncnnlab experiment: interrupted; finished sub-runs are kept in {where}/subruns."
              " Run the same command again to continue.", file=sys.stderr)
        return 130
    if tty and not args.quiet:
        print(file=sys.stderr)
    print(f"{report.verdict}: {report.findings.sentence}")
    print(f"report: {report.report_md}")
    return 0


def _add_experiments(sub) -> None:
    p = sub.add_parser("experiment", help="measure a claim of the literature and write a report",
                       description="cnnlab experiment list [--json] | index [--out DIR] | NAME "
                                   "[--profile quick|full] [--out DIR] [--seed N]")
    p.add_argument("name", metavar="NAME", help="an experiment (see `cnnlab experiment list`), "
                   "`list`, or `index` (regenerate docs/experiments/README.md)")
    p.add_argument("--profile", choices=("quick", "full"), default="quick",
                   help="quick: <= ~10 min on 2 CPU cores; full: paper scale, for a GPU")
    p.add_argument("--out", metavar="DIR", help="report folder (default runs/experiments/"
                   "NAME-PROFILE; for `index`: the folder of reports, default docs/experiments)")
    p.add_argument("--seed", type=_count_seed, default=0, help="seed of every sub-run")
    p.add_argument("--json", action="store_true", help="with `list`: machine-readable")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=_cmd_experiment)


def _count_seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= seed < 2**63:
        raise argparse.ArgumentTypeError(f"expected 0 <= N < 2**63, got {seed}")
    return seed


# ---- bench ------------------------------------------------------------------------------------

def _name_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected NAME[,NAME...], got {text!r}")
    return names


def _cmd_bench(args) -> int:
    from pathlib import Path

    from cnnlab.bench import run_benchmark

    for flag in ("models", "modes"):
        if getattr(args, flag) and args.suite not in ("precision", "all"):
            raise UsageError(f"--{flag} is an option of the precision suite (or all), "
                             f"not of {args.suite}")
    paths = run_benchmark(args.suite, models=args.models, modes=args.modes, quick=args.quick,
                          out=args.out, device=args.device, data_dir=args.data_dir,
                          progress=None if args.quiet else
                          lambda line: print(line, file=sys.stderr, flush=True))
    for path in paths:
        if path.suffix == ".md":
            print(Path(path).read_text())
    print("wrote " + "  ".join(map(str, paths)))
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="speed against this machine's limit: matmul peak, data "
                       "pipeline, precision / layout / compile per model",
                       description="Run one benchmark suite on this machine and write "
                       "OUT/SUITE.json and OUT/SUITE.md (machine, date, ratios to the baseline "
                       "of the same run). Never part of the test suite.")
    p.add_argument("suite", choices=("peak", "pipeline", "precision", "all"),
                   help="peak: fp32/bf16 matmul TFLOP/s; pipeline: batched on-device "
                   "augmentation vs a per-sample DataLoader; precision: eager fp32, "
                   "channels_last, bf16, torch.compile, best, per model (with MFU); all: each")
    p.add_argument("--models", type=_name_list, metavar="A,B",
                   help="precision: models to run (default lenet5, resnet20, resnet50, "
                   "vgg16_bn, mobilenet_v2, efficientnet_b0; any registered name works)")
    p.add_argument("--modes", type=_name_list, metavar="A,B",
                   help="precision: settings besides eager fp32 (default channels_last, bf16, "
                   "compile, best)")
    p.add_argument("--quick", action="store_true",
                   help="small batches and few repeats: a smoke check, not numbers to quote")
    p.add_argument("--out", default="benchmarks/results", metavar="DIR",
                   help="results folder (default benchmarks/results)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    p.add_argument("--data-dir", help="pipeline: dataset root (default $CNNLAB_DATA, ~/.cache)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_cmd_bench)


_SECTIONS = [_add_models, _add_data, _add_analysis, _add_training, _add_export, _add_inside,
             _add_experiments, _add_bench]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnlab", description="Build, inspect, train and compare the classic CNNs.")
    from cnnlab import __version__

    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SECTIONS:
        add(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """cnnlab's own warnings as one line in the command's terms; others as Python prints them."""
    from cnnlab.errors import CnnlabWarning

    if issubclass(category, CnnlabWarning):
        print(f"cnnlab: warning: {message}", file=sys.stderr)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():  # restores Python's printer when the command ends
            warnings.showwarning = _show_warning
            return args.func(args) or 0
    except UsageError as err:
        print(f"cnnlab {args.command}: error: {_wording(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cnnlab models | head`
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
