"""The `cnnlab` command: argument parsing only; each subcommand calls one public function.

Exit status: 0 on success, 2 on bad input (one-line reason on stderr), 1 on an unexpected failure.
"""

from __future__ import annotations

import argparse
import json
import sys

from cnnlab.errors import UsageError


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
    for col in ("name", "family", "year", "params", "input", "key idea"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for c in cards:
        params = f"{c.params:,}" if c.params else "-"
        table.add_row(c.name, c.family, str(c.year), params, "x".join(map(str, c.input_size)),
                      c.key_idea)
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
        spec, folder = catalog.get_spec(name), catalog.dataset_dir(name, args.data_dir)
        present = [(folder / f.name).is_file() for f in spec.files]
        status = "present" if all(present) else "partial" if any(present) else "missing"
        rows.append({"name": name, **spec.split_sizes, "status": status, "path": str(folder)})
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

    summary = summarize(args.model, args.input, train=args.train)
    if args.json:  # schema "cnnlab.summary/1": see cnnlab.analysis.Summary.to_dict
        print(json.dumps(summary.to_dict(args.depth), indent=2))
    elif args.csv:
        sys.stdout.write(summary.to_csv(args.depth))
    else:
        print(summary.render(3 if args.depth is None else args.depth or None))
    return 0


def _cmd_compare(args) -> int:
    from cnnlab.analysis import compare

    rows = compare(args.models, args.input)
    if args.plot:
        from cnnlab.report import plot_params_vs_macs

        plot_params_vs_macs(rows, args.plot)
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
    p.add_argument("--depth", type=int, metavar="N",
                   help="fold layers to N name components (table default 3, 0 = all layers; "
                        "--json/--csv default: all layers)")
    p.add_argument("--train", action="store_true",
                   help="run in train() mode (batch 2): includes training-only branches such as "
                        "auxiliary heads, and checks that the input is large enough for them")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="stable schema cnnlab.summary/1")
    fmt.add_argument("--csv", action="store_true", help="one row per layer")
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
    from cnnlab.train import TrainingInterrupted, train
    from cnnlab.train.config import flags_to_overrides

    overrides = flags_to_overrides(args)
    dataset = overrides.pop("dataset", None)
    overrides.pop("model", None)
    if dataset is None:
        raise UsageError("--dataset is required (a catalog name from `cnnlab data list` "
                         "or an image folder)")
    progress = None if args.progress == "none" else args.progress
    try:
        result = train(args.model, dataset, config=args.config, use_recipe=not args.no_recipe,
                       resume=args.resume, progress=progress, **overrides)
    except TrainingInterrupted as stop:
        print(f"cnnlab train: {stop}", file=sys.stderr)
        return 130
    f = result.final
    print(f"test top-1 {f['test_top1']:.2f}%  top-5 {f['test_top5']:.2f}%  loss "
          f"{f['test_loss']:.4f}  (best top-1 {f['best_test_top1']:.2f}% at epoch "
          f"{f['best_epoch']}; {f['seconds']:.0f} s)")
    print(f"run folder:  {result.run_dir}  (config.yaml, metrics.csv, final.json)")
    print(f"checkpoints: {f['checkpoints']['best']}  {f['checkpoints']['last']}")
    print(f"plots:       {f['plots']['curves']}  {f['plots']['confusion']}")
    return 0


def _cmd_eval(args) -> int:
    from cnnlab.train import evaluate
    from cnnlab.train.checkpoint import find_checkpoint, load_checkpoint

    dataset = args.dataset
    if dataset is None:  # the dataset the checkpoint was trained on
        dataset = load_checkpoint(find_checkpoint(args.checkpoint)).state["dataset"]["name"]
    res = evaluate(args.checkpoint, dataset, split=args.split, data_dir=args.data_dir,
                   batch_size=args.batch_size, device=args.device)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{res['dataset']} {res['split']} ({res['images']} images) with {res['checkpoint']}")
    print(f"top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%  loss {res['loss']:.4f}")
    width = max(len(c) for c in res["per_class"])
    for cls, acc in res["per_class"].items():
        print(f"  {cls:<{width}}  {acc:6.2f}%")
    return 0


def _cmd_predict(args) -> int:
    from cnnlab.train import predict

    res = predict(args.checkpoint, args.images, topk=args.topk, device=args.device)
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
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="top-k classes with probabilities for image files")
    p.add_argument("checkpoint", help="a run folder (uses its best checkpoint) or a .safetensors")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--topk", type=_positive_int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_predict)


# ---- parser ----------------------------------------------------------------------------------

_SECTIONS = [_add_models, _add_data, _add_analysis, _add_training]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnlab", description="Build, inspect, train and compare the classic CNNs.")
    from cnnlab import __version__

    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SECTIONS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UsageError as err:
        print(f"cnnlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cnnlab models | head`
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
