"""The command line: `tensorlens` (or `python -m service`) with one subcommand per task.

A command is one function decorated with :func:`command`, which names it, states its
arguments and registers it; the parser is built from that registry. With no subcommand
the service is served, so `python -m service` keeps starting the API. Anything the parser
does not know (an option, a subcommand) exits with status 2 and the usage, before
anything is imported or started.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

PROG = "tensorlens"
DEFAULT_COMMAND = "serve"
TOP_LEVEL_OPTIONS = ("-h", "--help", "--version")

#: What a command does with its parsed arguments; it returns the exit status.
Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Argument:
    """One `add_argument` call of a command: its flags and keyword options."""

    flags: tuple[str, ...]
    options: dict[str, Any]


def argument(*flags: str, **options: Any) -> Argument:
    return Argument(flags, options)


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    arguments: tuple[Argument, ...]
    run: Run


COMMANDS: dict[str, Command] = {}


def command(name: str, summary: str, *arguments: Argument) -> Callable[[Run], Run]:
    """Register the decorated function as the subcommand `name`: its docstring is the
    command's help text, `summary` its line in the top-level usage."""

    def register(run: Run) -> Run:
        COMMANDS[name] = Command(name, summary, arguments, run)
        return run

    return register


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 1..65535: {port}")
    return port


@command(
    "serve",
    "serve the API with uvicorn (the default command)",
    argument("--host", help="interface to bind to (default: TENSORLENS_HOST, 127.0.0.1)"),
    argument(
        "--port", type=port_number, help="TCP port to listen on (default: TENSORLENS_PORT, 8000)"
    ),
)
def serve(args: argparse.Namespace) -> int:
    """Serve the API on the configured host and port until SIGINT or SIGTERM. Every other
    setting comes from the TENSORLENS_* environment variables (or .env)."""
    import uvicorn

    from service.auth import warn_if_exposed
    from service.server import uvicorn_options
    from service.settings import get_settings

    settings = get_settings()
    warn_if_exposed(args.host or settings.host, settings.api_keys)
    uvicorn.run(
        "service.main:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=settings.log_level,
        # Keep-alive and header-read timeouts, the connection cap (503 above it).
        **uvicorn_options(settings),
        # The service writes its own structured line per request (service/observability.py).
        access_log=False,
        # Open streams (Server-Sent Events) must not hold a shutdown forever.
        timeout_graceful_shutdown=5,
    )
    return 0


@command("openapi", "print the OpenAPI document (what `make openapi` writes to openapi.json)")
def openapi(args: argparse.Namespace) -> int:
    """Print the API's OpenAPI document as JSON on standard output, exactly as committed
    in openapi.json. Starts no server and no worker."""
    from service.openapi import openapi_json

    sys.stdout.write(openapi_json())
    return 0


@command(
    "hash-key",
    "print a TENSORLENS_API_KEYS entry for an API key (a new one without KEY)",
    argument("key", nargs="?", help="the key to hash; `-` reads it from standard input"),
    argument("--role", choices=("infer", "train", "admin"), default="infer", help="its role"),
)
def hash_key(args: argparse.Namespace) -> int:
    """Print the `<role>:<sha256>` entry of an API key for TENSORLENS_API_KEYS (entries are
    comma-separated). Without KEY, a new random key is made and printed first: give it to
    the client, it is kept nowhere else."""
    from service.auth import hash_key, new_key

    key = sys.stdin.readline().strip() if args.key == "-" else args.key
    if not key:
        key = new_key()
        print(f"key: {key}")
    print(f"{args.role}:{hash_key(key)}")
    return 0


def _version() -> str:
    try:
        return metadata.version("tensorlens")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


class _CommandParser(argparse.ArgumentParser):
    """A subcommand's parser that reports arguments it does not know itself, with its own
    usage (argparse otherwise hands them up to the top level's)."""

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="tensorlens: image operations and small-model training and inference "
        f"over HTTP. Without a command, runs `{DEFAULT_COMMAND}`.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", parser_class=_CommandParser
    )
    for entry in COMMANDS.values():
        sub = subparsers.add_parser(
            entry.name,
            help=entry.summary,
            description=entry.run.__doc__,
        )
        for arg in entry.arguments:
            sub.add_argument(*arg.flags, **arg.options)
        sub.set_defaults(run=entry.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if args_list and args_list[0].startswith("-") and args_list[0] not in TOP_LEVEL_OPTIONS:
        # argparse would take the option's value for a command name and say "invalid choice".
        parser.error(
            f"unrecognized arguments: {args_list[0]} (a command's options go after it, "
            f"e.g. `{PROG} {DEFAULT_COMMAND} --port 8080`)"
        )
    # Only a bare call defaults to serving: `tensorlens --port 1` is an error, not a server.
    args = parser.parse_args(args_list or [DEFAULT_COMMAND])
    from pydantic import ValidationError

    try:
        return args.run(args)
    except ValidationError as error:  # a TENSORLENS_* variable that does not parse
        parser.exit(2, f"{PROG}: error: invalid settings: {error}\n")
