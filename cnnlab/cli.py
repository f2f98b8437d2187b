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
    Console().print(table)
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


# ---- parser ----------------------------------------------------------------------------------

_SECTIONS = [_add_models]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnlab", description=__doc__.splitlines()[0])
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
