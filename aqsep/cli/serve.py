"""`aqsep serve`: the web page, on this machine only unless told otherwise."""

from __future__ import annotations

import argparse
import socket
import sys

from aqsep.cli.argtypes import add_chunk_arguments, checked_float, chunk_options, positive_int
from aqsep.errors import AqsepError

EPILOG = """\
The page: open a song (or the bundled example) and see its waveform and spectrogram; drag over
the waveform where the instrument plays alone (or upload query clips, or pick a class); slide
between two queries; refine; play the estimate, the rest and the mixture at the same position;
download each as WAV or FLAC.

examples:
  aqsep serve                              # http://127.0.0.1:8000
  aqsep serve --port 8080 --model path/to/model
  aqsep serve --host 0.0.0.0               # reachable from the network: anyone there can use it

Needs the web extra: pip install "aqsep[web]".
"""


class WebExtraMissing(AqsepError):
    """FastAPI or uvicorn is not installed."""


def _megabytes(text: str) -> float:
    return checked_float(
        text,
        lambda v: 0 < v <= 100_000,
        "{text!r} is not a number of megabytes",
        "must be above 0 and at most 100000 MB, got {text}",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="a local web page: pick the query by ear and by eye, hear the result",
        description="Serve the aqsep web page (separation on this machine, nothing uploaded "
        "anywhere else).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="released model folder or bundled model name (default: the bundled model)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    parser.add_argument(
        "--port", type=positive_int, default=8000, help="port to listen on (default 8000)"
    )
    parser.add_argument(
        "--max-upload-mb",
        type=_megabytes,
        default=200.0,
        metavar="MB",
        help="largest song or query clip accepted, in megabytes (default 200)",
    )
    add_chunk_arguments(parser)
    parser.set_defaults(func=run)


def _check_port(host: str, port: int) -> None:
    """One clear line when the address cannot be listened on (uvicorn would log and exit)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise AqsepError(
            f"--host {host}: not an address of this machine ({err.strerror})"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            raise AqsepError(
                f"cannot listen on {host}:{port}: {err.strerror or err}; choose another --port"
            ) from None


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from aqsep.web import create_app
    except ImportError as err:
        raise WebExtraMissing(
            f"the web page needs the web extra ({err.name} is missing): pip install 'aqsep[web]'"
        ) from None
    from aqsep.api import Separator

    if args.port > 65535:
        raise AqsepError(f"--port must be at most 65535, got {args.port}")
    _check_port(args.host, args.port)
    sep = Separator(args.model, **chunk_options(args))
    local = args.host in ("127.0.0.1", "localhost", "::1")
    hosts = None if local else ["*"]
    if not local:
        print(
            f"aqsep: note: listening on {args.host}: anyone who can reach this machine can use "
            "the page",
            file=sys.stderr,
        )
    app = create_app(sep, max_upload=round(args.max_upload_mb * 1e6), allowed_hosts=hosts)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"aqsep: serving on http://{shown}:{args.port} (Ctrl+C stops)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
