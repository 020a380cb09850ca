"""``mmed-course``: run the course and inspect profiles from the command line.

mmed-course run --profile smoke                      # every notebook, in order
mmed-course run --profile smoke --only 0 --only 1    # just those notebooks
mmed-course run --profile colab --from 3 --set stage1.max_steps=50
mmed-course profiles                                 # list profiles
mmed-course show smoke --set ccts.threshold=0.7      # the resolved configuration
mmed-course env                                      # GPU/CPU, versions, Unsloth mode
mmed-course build-tiny DIR                           # build the embedded smoke model
"""

from __future__ import annotations

import argparse
import json
import sys

from .core.config import ConfigError, available_profiles, load_profile, parse_override


def _overrides(pairs: list[str] | None) -> dict:
    return dict(parse_override(p) for p in (pairs or []))


def build_parser() -> argparse.ArgumentParser:
    """The ``mmed-course`` command line: one subcommand per handler in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="mmed-course", description="Run the mmed-course notebooks.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the notebooks in order with papermill")
    run.add_argument("--profile", default="smoke", help="profile name or YAML path (default: smoke)")
    run.add_argument("--run-dir", help="run directory (default: runs/<profile>)")
    run.add_argument("--only", type=int, action="append", metavar="N", help="run only notebook N (repeatable)")
    run.add_argument("--from", dest="start_from", type=int, metavar="N", help="start at notebook N")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a profile field (repeatable)")
    run.add_argument("--notebooks-dir", help="folder holding the NN_*.ipynb notebooks")
    run.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: python3)")
    run.add_argument("--no-progress", action="store_true", help="hide the per-cell progress bar")

    sub.add_parser("profiles", help="list the shipped profiles")
    show = sub.add_parser("show", help="print a profile's resolved configuration as JSON")
    show.add_argument("profile", nargs="?", default="smoke")
    show.add_argument("--set", action="append", metavar="KEY=VALUE")
    sub.add_parser("env", help="report GPU/CPU, package versions and how Unsloth runs here")
    tiny = sub.add_parser("build-tiny", help="build the embedded smoke model into a directory")
    tiny.add_argument("out_dir")
    tiny.add_argument("--profile", default="smoke")

    book = sub.add_parser("book", help="build the Jupyter Book from a run's executed notebooks")
    book.add_argument("--run-dir", default="runs/smoke")
    book.add_argument("--output", help="where _build/ goes (default: book/)")

    serve = sub.add_parser("serve", help="serve a local model as an OpenAI-compatible chat endpoint")
    serve.add_argument("model_dir")
    serve.add_argument("--name", help="model name clients must send (default: the directory's name)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8001)
    serve.add_argument("--api-key-env", help="require the key held in this environment variable")
    serve.add_argument(
        "--batch-size", type=int, default=1, help="concurrent requests generated together as one batch (default 1)"
    )
    return parser


def _run(args: argparse.Namespace) -> int:
    from .runner import RunnerError, run_course

    try:
        report = run_course(
            args.profile,
            args.run_dir,
            notebooks_dir=args.notebooks_dir,
            only=args.only,
            start_from=args.start_from,
            overrides=_overrides(args.set),
            kernel_name=args.kernel,
            progress_bar=not args.no_progress,
        )
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if report.ok else 1


def _profiles(args: argparse.Namespace) -> int:
    for name in available_profiles():
        p = load_profile(name)
        print(f"{name:8s} {p.description}\n{'':8s} hardware: {p.hardware}; time: {p.expected_time}")
    return 0


def _show(args: argparse.Namespace) -> int:
    print(json.dumps(load_profile(args.profile, _overrides(args.set)).to_dict(), indent=2))
    return 0


def _env(args: argparse.Namespace) -> int:
    from .steps.setup import environment_report, report_rows

    for key, value in report_rows(environment_report()):
        print(f"{key:28s} {value}")
    return 0


def _build_tiny(args: argparse.Namespace) -> int:
    from .core.tiny import build_tiny_model_cached

    print(build_tiny_model_cached(args.out_dir, load_profile(args.profile).tiny))
    return 0


def _book(args: argparse.Namespace) -> int:
    from .book import BookError, build_book

    try:
        html = build_book(args.run_dir, output_dir=args.output)
    except BookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"book: {html / 'index.html'}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from .core.llm import LocalBackend
    from .serve import ChatServer

    name = args.name or Path(args.model_dir).resolve().name
    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    backend = LocalBackend(args.model_dir, batch_size=args.batch_size)
    server = ChatServer(backend, name, args.host, args.port, key, batch_size=args.batch_size)
    print(f"serving {args.model_dir} as {name!r} on {server.base_url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


COMMANDS = {
    "run": _run,
    "profiles": _profiles,
    "show": _show,
    "env": _env,
    "build-tiny": _build_tiny,
    "book": _book,
    "serve": _serve,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
