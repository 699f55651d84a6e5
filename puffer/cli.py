"""The `puffer` command line: backends, envs, algos, conformance, train, eval, export, push, preferences, collect."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from puffer.errors import PufferError


def _cmd_backends(args: argparse.Namespace) -> int:
    from puffer import backends

    installed = backends.available()
    for name in backends.names():
        version = installed.get(name)
        role = "train" if name in backends.TRAINING else "inference" if name == "onnxruntime" else (
            "reference" if name == "numpy" else "export")
        status = version if version else "not installed"
        print(f"{name:12s} {role:10s} {status}")
    return 0


def _cmd_envs(args: argparse.Namespace) -> int:
    from puffer import envs

    for line in envs.describe():
        print(line)
    return 0


def _cmd_conformance(args: argparse.Namespace) -> int:
    import conformance

    return conformance.run(args.backend or None, args.pytest_args)


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from puffer.export import export

    if args.to is None and args.web is None:
        raise PufferError("puffer export needs --to FILE.onnx, --web DIR, or both")
    if args.web is not None:
        from puffer.export.web import onnxruntime_web

        onnxruntime_web()  # fetch or find onnxruntime-web first: its failure should leave nothing written
    to = Path(args.to) if args.to is not None else Path(args.web) / "policy.onnx"
    path = export(args.run, to, sample_graph=args.sample_graph, opset=args.opset)
    print(f"exported {args.run} to {path}")
    print(f"evaluate: puffer eval --policy {path} --backend onnxruntime")
    if args.web is not None:
        from puffer.export.web import write_site

        page = write_site(path, args.web)
        print(f"web page: {page} (serve it: python -m http.server -d {args.web}, then open http://localhost:8000)")
    return 0


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The argument parser of the `puffer` command (`puffer train`'s flags are those of the algorithm in `argv`)."""
    import puffer

    parser = argparse.ArgumentParser(prog="puffer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"puffer {puffer.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("backends", help="list backends and whether they are installed")
    p.set_defaults(func=_cmd_backends)

    p = sub.add_parser("envs", help="list the built-in environments")
    p.set_defaults(func=_cmd_envs)

    p = sub.add_parser("conformance", help="run the cross-backend conformance suite")
    p.add_argument("--backend", action="append", help="backend to check (repeatable; default: all installed)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="extra arguments passed to pytest")
    p.set_defaults(func=_cmd_conformance)

    p = sub.add_parser("export", help="export a trained policy to ONNX (from any training backend)")
    p.add_argument("run", help="run directory or checkpoint directory")
    p.add_argument("--to", help="output .onnx file")
    p.add_argument("--web", metavar="DIR", help="also write a static page to DIR in which the policy acts in the "
                                                "browser on onnxruntime-web (CartPole is drawn; other envs take "
                                                "typed-in observations)")
    p.add_argument("--sample-graph", action="store_true", help="also export a sampling graph with a noise input")
    p.add_argument("--opset", type=int, default=None,
                   help="target ONNX opset, 13 or newer (default: 17, which onnxruntime, onnxruntime-node and "
                        "onnxruntime-web >= 1.12 load); an op the target lacks is an error naming the opset it needs")
    p.set_defaults(func=_cmd_export)

    from puffer import datasets, hub, preferences
    from puffer.train import cli as train_cli

    algo = train_cli.selected_algo(argv[1:]) if argv and argv[0] == "train" else train_cli.DEFAULT_ALGO
    train_cli.add_commands(sub, algo)
    hub.add_command(sub)
    preferences.add_command(sub)
    datasets.add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `puffer` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    # pytest options (-q, -x, -k ...) pass through `puffer conformance` without needing `--`
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if extra:
        if args.command != "conformance":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.pytest_args = [*extra, *args.pytest_args]
    try:
        return int(args.func(args) or 0)
    except PufferError as e:
        print(f"puffer: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("puffer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
