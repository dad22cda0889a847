"""The `ferris-jax` command line: embed a text file, describe a model, list the presets, build
and search an index.

    ferris-jax embed texts.txt -o vectors.npy
    cat texts.txt | ferris-jax embed -m e5-small-v2 --prompt-name query > vectors.jsonl
    ferris-jax info -m all-MiniLM-L6-v2
    ferris-jax models
    ferris-jax doctor
    ferris-jax warmup -m all-MiniLM-L6-v2
    ferris-jax index build docs/ notes.jsonl -m all-MiniLM-L6-v2 -o my-index
    ferris-jax search my-index "how do I reset my password?" -k 5
    ferris-jax serve -m all-MiniLM-L6-v2 --index my-index --port 8080

Every expected failure prints one line, `ferris-jax: error: <message>`, and exits 2 for usage
errors (found before any work starts) or 1 for runtime errors. JAX and the model are imported
only inside the commands that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from ferris_jax._version import __version__
from ferris_jax.files import (
    descriptor_of,
    is_replaceable,
    remove_pending_files,
    split_lines,
    write_output,
)

PROG = "ferris-jax"
FORMATS = ("npy", "jsonl")
_SUFFIX_FORMATS = {".npy": "npy", ".jsonl": "jsonl", ".json": "jsonl"}
_DTYPES = ("float32", "bfloat16", "float16")
# Index search precisions (ferris_jax.retrieval.index.PRECISIONS, spelled out so that building
# the parser imports no JAX).
_PRECISIONS = ("float32", "bfloat16", "int8", "binary")

_EMBED_EPILOG = """\
input: one text per line, UTF-8 (a leading byte-order mark is ignored). Only the line ending
(\\n or \\r\\n) is removed: blank lines are kept as empty texts, so line N of the input is row N
of the output. A final line without a newline is still a text; an empty input gives 0 rows.

output: .npy (float32 [n, dim]) or JSON lines ({"index": i, "embedding": [...]} per text),
from --format or the suffix of --output (.npy, .jsonl, .json). Without --output, JSON lines
go to stdout. Files are written atomically: a failed or interrupted run leaves an existing file
untouched (a symbolic link is followed). A device or FIFO (/dev/stdout, >(gzip > v.jsonl.gz))
is written straight through, as JSON lines unless its name or --format says otherwise.
"""


class UsageError(Exception):
    """A bad command line (exit status 2)."""


class CommandError(Exception):
    """An expected runtime failure (exit status 1), with a message that says how to fix it."""


class _Parser(argparse.ArgumentParser):
    """Reports a usage error as an exception, so main can print it on one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------- argument types
def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            n = None
        if n is None or n < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value!r}")
        return n

    return parse


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {value!r}")
    return seconds


def _encoding(value: str) -> str:
    import codecs

    try:
        codecs.lookup(value)
    except LookupError:
        raise argparse.ArgumentTypeError(
            f"unknown encoding {value!r} (e.g. utf-8, latin-1, cp1252, utf-16)"
        ) from None
    return value


def _model_options() -> argparse.ArgumentParser:
    """Options every command that loads a model shares."""
    parent = _Parser(add_help=False)
    parent.add_argument(
        "-m",
        "--model",
        metavar="NAME",
        help="preset name, Hugging Face hub id or local checkpoint directory "
        "(default: all-MiniLM-L6-v2; see 'ferris-jax models')",
    )
    parent.add_argument(
        "--dtype", choices=_DTYPES, default="float32", help="parameter and compute dtype"
    )
    parent.add_argument(
        "--backend",
        metavar="NAME",
        help="auto (default, or $FERRIS_JAX_BACKEND), cpu, cuda, rocm, tpu, metaljax, mps, METAL",
    )
    parent.add_argument(
        "--max-seq-length",
        type=_int_at_least(2),
        metavar="N",
        help="tokens per text, special tokens included (default: the model's)",
    )
    parent.add_argument(
        "--devices",
        type=_devices,
        metavar="local|N",
        help="run over every device of this process ('local') or its first N, data parallel "
        "(default: one device)",
    )
    return parent


def _devices(value: str) -> str | int:
    if value == "local":
        return value
    try:
        return _int_at_least(1)(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected 'local' or a count >= 1, got {value!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """The `ferris-jax` argument parser (subcommands embed, info, models)."""
    parser = _Parser(prog=PROG, description="JAX-native sentence embeddings.", allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error, not one line"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    model = _model_options()

    embed = commands.add_parser(
        "embed",
        parents=[model],
        help="embed a file of texts, one per line",
        description="Embed texts (one per line) into a .npy file or JSON lines.",
        epilog=_EMBED_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    embed.add_argument("input", nargs="?", metavar="INPUT", help="text file; '-' or absent: stdin")
    embed.add_argument("-o", "--output", metavar="PATH", help="output file ('-': stdout)")
    embed.add_argument("--format", choices=FORMATS, help="output format (default: from --output)")
    embed.add_argument("--batch-size", type=_int_at_least(1), default=32, metavar="N")
    embed.add_argument("--normalize", action="store_true", help="L2-normalize the embeddings")
    prompt = embed.add_mutually_exclusive_group()
    prompt.add_argument("--prompt-name", metavar="NAME", help="one of the model's named prompts")
    prompt.add_argument("--prompt", metavar="TEXT", help="literal text to prepend to every input")
    embed.add_argument(
        "--truncate-dim",
        type=_int_at_least(1),
        metavar="K",
        help="keep the first K dimensions (Matryoshka)",
    )
    embed.add_argument(
        "--no-progress",
        action="store_true",
        help="never show a progress bar (by default one appears on a terminal for long jobs)",
    )
    embed.set_defaults(run=_embed)

    info = commands.add_parser(
        "info",
        parents=[model],
        help="load a model and describe it and the JAX devices",
        description="Load a model and print what it is and where it runs.",
        allow_abbrev=False,
    )
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=_info)

    models = commands.add_parser(
        "models",
        help="list the model presets",
        description="List the named presets accepted by -m/--model. OFFLINE says whether a "
        "preset loads here without the network (in the local hub cache, or packaged).",
        allow_abbrev=False,
    )
    models.add_argument("--json", action="store_true", help="print a JSON list")
    models.set_defaults(run=_models)

    doctor = commands.add_parser(
        "doctor",
        help="check the JAX platforms, the backend ferris-jax picks, and the compile cache",
        description="Print platform, devices, plugin versions, LayerNorm path, probe result "
        "and compile-cache status. Exits 1 if the accelerator failed the probe.",
        allow_abbrev=False,
    )
    doctor.add_argument("--backend", metavar="NAME", help="check this backend instead of auto")
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    doctor.set_defaults(run=_doctor)
    warmup = commands.add_parser(
        "warmup",
        parents=[model],
        help="compile a model's programs into the persistent compilation cache",
        description="Compile every program 'embed', 'index' and 'serve' may use at these batch "
        "sizes (each length bucket, full and partial batches, packed rows) into JAX's "
        "persistent compilation cache, so that later processes start warm.",
        allow_abbrev=False,
    )
    warmup.add_argument(
        "--batch-size",
        type=_int_at_least(1),
        nargs="+",
        default=[32, 64],
        metavar="N",
        help="the batch sizes later jobs use (default: 32 64, embed's and index's defaults)",
    )
    warmup.add_argument("--json", action="store_true", help="print one JSON object")
    warmup.set_defaults(run=_warmup)
    _add_index_commands(commands, model)
    _add_serve_command(commands, model)
    return parser


def _document_options() -> argparse.ArgumentParser:
    """Options of the commands that read, chunk and embed documents into an index."""
    parent = _Parser(add_help=False)
    parent.add_argument("--batch-size", type=_int_at_least(1), default=64, metavar="N")
    parent.add_argument(
        "--max-tokens",
        type=_int_at_least(1),
        metavar="N",
        help="tokens per chunk at most (default: as many as the model takes with its prompt)",
    )
    parent.add_argument(
        "--overlap",
        type=_int_at_least(0),
        metavar="N",
        help="tokens a chunk repeats from the one before, at most (default: max-tokens // 8)",
    )
    parent.add_argument(
        "--no-chunk",
        action="store_true",
        help="embed each document whole, with its own id (a document too long for the model "
        "is refused)",
    )
    parent.add_argument(
        "--text-field", default="text", metavar="KEY", help="JSON Lines key of the text"
    )
    parent.add_argument("--id-field", default="id", metavar="KEY", help="JSON Lines key of the id")
    parent.add_argument(
        "--encoding",
        type=_encoding,
        default="utf-8",
        metavar="NAME",
        help="encoding of every source file, e.g. latin-1 (default: utf-8; undecodable bytes "
        "are refused, never replaced)",
    )
    parent.add_argument(
        "--save-every",
        type=_int_at_least(1),
        default=8192,
        metavar="N",
        help="save the index after about every N chunks, so an interrupted run continues "
        "from there when run again (default: 8192)",
    )
    parent.add_argument(
        "--prune",
        action="store_true",
        help="also remove the documents read earlier from these SOURCES that are gone now "
        "(deleted files, or records no longer in a .jsonl file)",
    )
    parent.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    return parent


def _wait_option() -> argparse.ArgumentParser:
    """--wait of the commands that write an index (one writer at a time)."""
    parent = _Parser(add_help=False)
    parent.add_argument(
        "--wait",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="if another process is writing the index, wait this long for it to finish "
        "(default: 0, stop at once and name it)",
    )
    return parent


def _add_sources(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCES",
        help=".txt/.md files, folders of them (recursive) and .jsonl files (one document a line)",
    )


def _add_index_commands(commands: Any, model: argparse.ArgumentParser) -> None:
    """The `index build/add/remove/merge/info` and `search` commands."""
    documents = _document_options()
    wait = _wait_option()
    index = commands.add_parser(
        "index",
        help="build, extend, shrink, merge or describe a search index",
        description="A persistent vector index of document chunks (see 'ferris-jax search').",
        allow_abbrev=False,
    )
    actions = index.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = actions.add_parser(
        "build",
        parents=[model, documents, wait],
        help="chunk and embed documents into a new index (or continue an interrupted build)",
        description="Read documents, split them into token-bounded overlapping chunks, embed "
        "them and save the index to the folder -o. Run again, the same command continues or "
        "updates it: unchanged documents are skipped, edited ones embedded again.",
        allow_abbrev=False,
    )
    _add_sources(build)
    build.add_argument("-o", "--output", required=True, metavar="INDEX", help="index folder")
    build.add_argument(
        "--precision",
        choices=_PRECISIONS,
        help="how the index searches (default float32; int8/binary/bfloat16 are re-ranked "
        "with the float32 vectors)",
    )
    processes = build.add_argument_group(
        "several processes (hosts)",
        "Run the same command once per process, each with its --process-id: each embeds "
        "every N-th document into its part of the index (OUTPUT.parts/, which continues an "
        "interrupted build), then process 0 merges the parts into OUTPUT. OUTPUT and "
        "OUTPUT.parts must be on storage every process reaches.",
    )
    processes.add_argument(
        "--coordinator", metavar="HOST:PORT", help="process 0's address, the same for every one"
    )
    processes.add_argument(
        "--processes", type=_int_at_least(1), metavar="N", help="how many processes run"
    )
    processes.add_argument(
        "--process-id", type=_int_at_least(0), metavar="I", help="this process, 0 .. N-1"
    )
    build.set_defaults(run=_index_build)

    backend = _Parser(add_help=False)
    backend.add_argument("--backend", metavar="NAME", help="as in 'ferris-jax embed --help'")

    add = actions.add_parser(
        "add",
        parents=[backend, documents, wait],
        help="chunk and embed more documents into an index, with the index's model",
        description="Add documents to an index: new ones are added, edited ones embedded "
        "again (their old chunks removed), unchanged ones skipped.",
        allow_abbrev=False,
    )
    add.add_argument("index", metavar="INDEX", help="index folder")
    _add_sources(add)
    add.set_defaults(run=_index_add)

    remove = actions.add_parser(
        "remove",
        parents=[backend, wait],
        help="remove chunks (or whole documents) from an index",
        description="Remove items by id (chunk ids are DOCUMENT#K) and save the index.",
        allow_abbrev=False,
    )
    remove.add_argument("index", metavar="INDEX", help="index folder")
    remove.add_argument("ids", nargs="+", metavar="IDS", help="chunk ids, or document ids")
    remove.add_argument(
        "--document", action="store_true", help="the IDS are documents: remove all their chunks"
    )
    remove.add_argument(
        "--compact", action="store_true", help="also drop the removed vectors from the files"
    )
    remove.set_defaults(run=_index_remove)

    merge = actions.add_parser(
        "merge",
        parents=[backend, wait],
        help="merge indexes built separately (shares of one corpus) into a new index",
        description="Merge index folders built separately, e.g. by several processes or "
        "machines each embedding its own share of a corpus, into the new index -o: the rows of "
        "the PARTs in order, vectors copied as they are, documents kept (so 'index add' skips "
        "unchanged ones). The parts must share their model, options and chunking, and no id "
        "may be in two of them; they are only read.",
        allow_abbrev=False,
    )
    merge.add_argument(
        "-o", "--output", required=True, metavar="INDEX", help="the new index folder (new or empty)"
    )
    merge.add_argument("parts", nargs="+", metavar="PART", help="index folders, in order")
    merge.set_defaults(run=_index_merge)

    info = actions.add_parser(
        "info",
        parents=[backend],
        help="describe an index",
        description="Print what an index holds and how it searches.",
        allow_abbrev=False,
    )
    info.add_argument("index", metavar="INDEX", help="index folder")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=_index_info)

    search = commands.add_parser(
        "search",
        parents=[backend],
        help="search an index",
        description="Embed each QUERY with the index's model and print the best chunks.",
        allow_abbrev=False,
    )
    search.add_argument("index", metavar="INDEX", help="index folder")
    search.add_argument("queries", nargs="+", metavar="QUERY")
    search.add_argument("-k", "--top-k", type=_int_at_least(1), default=5, metavar="K")
    search.add_argument(
        "--filter",
        metavar="JSON",
        help='metadata conditions, e.g. \'{"source": "docs/a.md"}\' or '
        '\'{"year": {"$gte": 2020}}\'',
    )
    search.add_argument(
        "--by-document", action="store_true", help="the best chunk of each of the K best documents"
    )
    search.add_argument(
        "--mode",
        choices=("dense", "lexical", "hybrid"),
        default="dense",
        help="dense: the vectors (default); lexical: BM25 over the texts; hybrid: both, fused "
        "by reciprocal rank",
    )
    search.add_argument(
        "--candidates",
        type=_int_at_least(1),
        metavar="N",
        help="rows each side of a hybrid search gives, and hits --rerank re-scores "
        "(default: 4 x K)",
    )
    search.add_argument(
        "--rerank",
        metavar="MODEL",
        help="re-score the candidates with this cross-encoder (a folder or a Hugging Face id, "
        "e.g. cross-encoder/ms-marco-MiniLM-L6-v2); scores are then its own",
    )
    search.add_argument("--json", action="store_true", help="print JSON lines, one per hit")
    search.set_defaults(run=_search)


_SERVE_EPILOG = """\
endpoints: POST /v1/embeddings (OpenAI), POST /embed (text-embeddings-inference),
POST /v1/search (with --index: mode dense/lexical/hybrid, weights, candidates, and rerank
with --reranker), POST /rerank (text-embeddings-inference's, with --reranker), GET
/v1/models, /info, /health, /metrics (Prometheus).

  curl -s localhost:8080/v1/embeddings -H 'Content-Type: application/json' \\
       -d '{"input": ["a first text", "a second"], "model": "all-MiniLM-L6-v2"}'
  curl -s localhost:8080/rerank -H 'Content-Type: application/json' \\
       -d '{"query": "reset my password", "texts": ["Open Settings.", "Invoices."]}'

Requests arriving together are batched onto the device. A full queue answers 429 with
Retry-After; SIGTERM stops accepting, finishes the requests in flight and exits (Ctrl-C
stops at once).
The API key may also come from $FERRIS_JAX_API_KEY (kept out of the process list).
"""


def _add_serve_command(commands: Any, model: argparse.ArgumentParser) -> None:
    serve = commands.add_parser(
        "serve",
        parents=[model],
        help="serve embeddings (OpenAI and TEI APIs), search and reranking over HTTP",
        description="Serve the model over HTTP: OpenAI's embeddings API, text-embeddings-"
        "inference's /embed and /rerank (with --reranker), and search over an index. Needs "
        "the serve extra: "
        "pip install 'ferris-jax[serve]'.",
        epilog=_SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    serve.add_argument(
        "--index", metavar="DIR", help="an index folder to search (its model, unless -m is given)"
    )
    serve.add_argument(
        "--reranker",
        metavar="MODEL",
        help="a cross-encoder (folder or hub id) to serve on /rerank and for search's rerank; "
        "it runs where the model does",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, loopback)"
    )
    serve.add_argument("--port", type=_int_at_least(0), default=8080, help="(default: 8080)")
    serve.add_argument(
        "--api-key",
        metavar="KEY",
        default=os.environ.get("FERRIS_JAX_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $FERRIS_JAX_API_KEY, else none)",
    )
    serve.add_argument(
        "--served-model-name",
        metavar="NAME",
        help="the model name clients send (default: the model's)",
    )
    serve.add_argument("--batch-size", type=_int_at_least(1), default=32, metavar="N")
    serve.add_argument(
        "--max-inputs", type=_int_at_least(1), default=2048, metavar="N", help="texts per request"
    )
    serve.add_argument(
        "--max-chars",
        type=_int_at_least(1),
        default=2_000_000,
        metavar="N",
        help="characters per request, all texts together",
    )
    serve.add_argument(
        "--queue-size",
        type=_int_at_least(1),
        default=512,
        metavar="N",
        help="requests waiting for the device at most; past it, HTTP 429 (default: 512)",
    )
    serve.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="a request waiting and running longer fails with HTTP 504 (default: 60)",
    )
    serve.add_argument(
        "--drain-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, time the requests in flight get to finish (default: 30)",
    )
    serve.add_argument(
        "--engine",
        choices=("process", "thread"),
        default="process",
        help="where the model runs: a process of its own, so that HTTP and the device's host "
        "work don't share one Python interpreter (default), or threads of this process",
    )
    serve.add_argument(
        "--no-precompile",
        action="store_true",
        help="listen at once; programs compile on first use (default: compile first)",
    )
    serve.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise CommandError(f"serving needs {e.name}: pip install 'ferris-jax[serve]'") from None
    from ferris_jax.serve.schemas import Limits
    from ferris_jax.serve.server import serve

    if args.index is not None:
        _index_folder(args.index)  # a bad folder fails here, before a process starts
    limits = Limits(
        max_inputs=args.max_inputs,
        max_chars=args.max_chars,
        queue_size=args.queue_size,
        timeout=args.timeout or float("inf"),
    )
    index = reranker = None
    if args.engine == "process":
        from ferris_jax.serve.engine import EngineProcess

        model: Any = EngineProcess(
            functools.partial(_serving_model, args),
            batch_size=args.batch_size,
            queue_size=args.queue_size,
            precompile=not args.no_precompile,
        )
    else:
        model, index, reranker = _serving_model(args)
    serve(
        model,
        host=args.host,
        port=args.port,
        index=index,
        reranker=reranker,
        limits=limits,
        api_key=args.api_key or None,
        batch_size=args.batch_size,
        model_name=args.served_model_name,
        precompile=not args.no_precompile,
        drain_timeout=args.drain_timeout,
        log_level=args.log_level,
    )
    return 0


def _serving_model(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The encoder, index (or None) and reranker (or None) `ferris-jax serve` serves, loaded in
    the process that runs them (the engine process, unless --engine thread)."""
    index = None
    if args.index is not None:
        from ferris_jax.retrieval.index import Index

        folder = _index_folder(args.index)
        if args.model is not None:
            encoder = _load(args)
            index = Index.load(folder, encoder)
        else:
            index = Index.load(
                folder,
                dtype=args.dtype,
                max_seq_length=args.max_seq_length,
                backend=args.backend,
                devices=args.devices,
            )
            encoder = index.encoder
        if encoder is None:
            raise CommandError(f"{args.index}: this index has no model; pass one with -m")
    else:
        encoder = _load(args)
    reranker = None
    if args.reranker is not None:
        from ferris_jax.api import load_reranker

        reranker = load_reranker(args.reranker, dtype=args.dtype, backend=args.backend)
    return encoder, index, reranker


# ---------------------------------------------------------------- input and output
def read_texts(source: str | None) -> list[str]:
    """The texts of a file, or of stdin for None or '-'."""
    if source in (None, "-"):
        stdin = sys.stdin
        if source is None and stdin.isatty():
            raise UsageError("no INPUT given and stdin is a terminal; pass a file or pipe texts in")
        name = "<stdin>"
        buffer = getattr(stdin, "buffer", None)
        data = buffer.read() if buffer is not None else stdin.read().encode("utf-8")
    else:
        name = source
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise CommandError(f"cannot read input {source}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CommandError(
            f"{name}: not valid UTF-8 at line {line} (byte {e.start}); "
            "convert it first, e.g. iconv -f LATIN1 -t UTF-8"
        ) from None
    return split_lines(text)


def output_format(output: str | None, fmt: str | None) -> str:
    """--format if given, else the format the output's suffix names (stdout, and a device or
    FIFO without a known suffix: JSON lines)."""
    if fmt is not None:
        return fmt
    if output in (None, "-"):
        return "jsonl"
    suffix = Path(output).suffix.lower()
    if suffix not in _SUFFIX_FORMATS and not is_replaceable(output):
        return "jsonl"  # a device or FIFO without a suffix (/dev/stdout): as stdout
    if suffix not in _SUFFIX_FORMATS:
        raise UsageError(
            f"cannot tell the output format of {output!r} from its suffix; "
            f"use .npy, .jsonl or .json, or pass --format {{{','.join(FORMATS)}}}"
        )
    return _SUFFIX_FORMATS[suffix]


def check_writable(output: str) -> None:
    """Fail before the (slow) model load if the output cannot be written."""
    path = Path(output)
    if descriptor_of(path) is not None:  # an open descriptor: written as the shell opened it
        return
    if path.is_dir():
        raise CommandError(f"output {output} is a directory; pass a file name")
    if not is_replaceable(path):  # a device or FIFO: written through, never replaced
        if not os.access(path, os.W_OK):
            raise CommandError(f"cannot write {output}: permission denied")
        return
    parent = Path(os.path.realpath(path)).parent
    if not parent.is_dir():
        raise CommandError(f"cannot write {output}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise CommandError(f"cannot write {output}: directory {parent} is not writable")


def write_jsonl(stream: IO[str], embeddings: Any) -> None:
    for i, row in enumerate(embeddings.tolist()):
        stream.write(json.dumps({"index": i, "embedding": row}) + "\n")


def write_npy(stream: IO[bytes], embeddings: Any) -> None:
    import numpy as np

    np.save(stream, embeddings, allow_pickle=False)


def write_file(path: str, fmt: str, embeddings: Any) -> None:
    """Write the output `path`: atomically for a regular file (readers see the old file or the
    complete new one), straight through for a device or FIFO."""
    binary = fmt == "npy"
    try:
        write_output(
            path, lambda f: (write_npy if binary else write_jsonl)(f, embeddings), binary=binary
        )
    except OSError as e:
        raise CommandError(f"cannot write {path}: {e.strerror or e}") from e


def write_stdout(fmt: str, embeddings: Any) -> None:
    if fmt == "jsonl":
        write_jsonl(sys.stdout, embeddings)
        sys.stdout.flush()
        return
    if sys.stdout.isatty():
        raise UsageError("refusing to write binary .npy to a terminal; pass -o FILE.npy")
    sys.stdout.flush()
    write_npy(sys.stdout.buffer, embeddings)
    sys.stdout.buffer.flush()


# ---------------------------------------------------------------- commands
def _load(args: argparse.Namespace) -> Any:
    import ferris_jax

    name = () if args.model is None else (args.model,)
    return ferris_jax.load(
        *name,
        dtype=args.dtype,
        max_seq_length=args.max_seq_length,
        backend=args.backend,
        devices=args.devices,
    )


def _embed(args: argparse.Namespace) -> int:
    to_stdout = args.output in (None, "-")
    fmt = output_format(args.output, args.format)
    if not to_stdout:
        check_writable(args.output)
    texts = read_texts(args.input)
    start = time.perf_counter()
    encoder = _load(args)
    loaded = time.perf_counter()
    programs, compiling = len(encoder.programs), encoder.compile_seconds
    show = False if args.no_progress or not sys.stderr.isatty() else None
    embeddings = encoder.encode(
        texts,
        batch_size=args.batch_size,
        normalize_embeddings=True if args.normalize else None,
        prompt_name=args.prompt_name,
        prompt=args.prompt,
        truncate_dim=args.truncate_dim,
        show_progress_bar=show,
    )
    encoded = time.perf_counter()
    if to_stdout:
        write_stdout(fmt, embeddings)
    else:
        write_file(args.output, fmt, embeddings)
    n, dim = embeddings.shape
    compiled = len(encoder.programs) - programs
    print(
        f"{PROG}: embedded {n} text{'' if n == 1 else 's'}, dim {dim}, in {encoded - loaded:.2f} s "
        f"(model load {loaded - start:.2f} s; compiled {compiled} program"
        f"{'' if compiled == 1 else 's'} in {encoder.compile_seconds - compiling:.2f} s) -> "
        f"{'<stdout>' if to_stdout else args.output}",
        file=sys.stderr,
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    import jax

    from ferris_jax.runtime.backend import describe, device_listing

    info = _load(args).info()  # its "devices": the ones the model is placed on
    info["ferris_jax"] = __version__
    info["jax"] = jax.__version__
    listing = device_listing()
    info["process"] = f"{listing['process_index']} of {listing['process_count']}"
    info["local_devices"] = describe()  # every platform's devices in this process
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key + ':':<{width + 1}} {_human(value)}")
    return 0


def _warmup(args: argparse.Namespace) -> int:
    from ferris_jax.runtime.compilation import cache_stats, compilation_cache_dir

    encoder = _load(args)
    cache = compilation_cache_dir()
    if cache is None:
        raise CommandError(
            f"the persistent compilation cache is off on {encoder.backend.platform} (or its "
            "folder cannot be created): a warmup would last only as long as this process"
        )
    before, start = cache_stats(), time.perf_counter()
    shapes = sorted(
        {s for b in args.batch_size for s in encoder.precompile(b, partial_batches=True)}
    )
    after = cache_stats()
    report = {
        "model": encoder.checkpoint.name,
        "platform": encoder.backend.platform,
        "batch_sizes": args.batch_size,
        "programs": len(shapes),
        "from_cache": after["hits"] - before["hits"],
        "compiled": after["misses"] - before["misses"],
        "seconds": round(time.perf_counter() - start, 2),
        "cache": str(cache),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{report['programs']} programs for {report['model']} on {report['platform']} "
            f"(batch sizes {', '.join(map(str, args.batch_size))}): {report['compiled']} "
            f"compiled, {report['from_cache']} already cached, {report['seconds']} s; "
            f"cache: {cache}"
        )
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from ferris_jax.doctor import report, text_lines

    result = report(args.backend)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            first, *rest = text_lines(key, value) or [_human(value)]
            print(f"{key + ':':<{width + 1}} {first}")
            for line in rest:  # continued in the value column
                print(f"{'':<{width + 1}} {line}")
    return 1 if result["fallback_from"] else 0


def _human(value: Any) -> str:
    if isinstance(value, dict):
        return (
            ", ".join(
                f"{k}={_human(v) if isinstance(v, (dict, list)) else repr(v)}"
                for k, v in value.items()
            )
            or "-"
        )
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def _models(args: argparse.Namespace) -> int:
    from ferris_jax.loading.hub import is_available_offline
    from ferris_jax.loading.presets import list_presets

    presets = list_presets()
    here = [is_available_offline(p.hub_id) for p in presets]
    if args.json:
        listed = [
            {**dataclasses.asdict(p), "available_offline": h}
            for p, h in zip(presets, here, strict=True)
        ]
        print(json.dumps(listed, indent=2))
        return 0
    table = [("NAME", "FAMILY", "DIMS", "POOLING", "MAX LEN", "OFFLINE", "HUB ID")]
    table += [
        (
            p.name,
            p.family,
            str(p.dims),
            "+".join(p.pooling),
            str(p.max_seq_length),
            "yes" if h else "no",
            p.hub_id,
        )
        for p, h in zip(presets, here, strict=True)
    ]
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    widths[-1] = 0  # no trailing spaces after the last column
    numeric = {2, 4}  # right-aligned columns
    for row in table:
        cells = [
            cell.rjust(w) if c in numeric else cell.ljust(w)
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells))
    return 0


# ---------------------------------------------------------------- index and search
def _index_folder(path: str) -> Path:
    """An existing index folder, or a CommandError that says what is there instead."""
    from ferris_jax.retrieval.store import MANIFEST

    folder = Path(path)
    if not folder.is_dir():
        raise CommandError(f"{path}: no such index folder; build one with '{PROG} index build'")
    if not (folder / MANIFEST).is_file():
        raise CommandError(
            f"{path}: not an index (no {MANIFEST}); build one with '{PROG} index build'"
        )
    return folder


def _open_index(path: str, backend: str | None = None) -> Any:
    """The index at `path` with the model it was built with."""
    from ferris_jax.retrieval.index import Index

    return Index.load(_index_folder(path), backend=backend)


@contextlib.contextmanager
def _writing(wait: float) -> Iterator[None]:
    """Turn another writer's lock on the index into a one-line error that names it."""
    from ferris_jax.retrieval.store import IndexLockedError

    try:
        yield
    except IndexLockedError as e:
        hint = "" if wait else ", or pass --wait SECONDS"
        raise CommandError(f"{e}{hint}") from None


def _open_index_for_writing(path: str, args: argparse.Namespace, encoder: Any = None) -> Any:
    """The index at `path`, locked for writing until the process ends (see `Index.lock`)."""
    from ferris_jax.retrieval.index import Index

    folder = _index_folder(path)
    with _writing(args.wait):
        options = {} if encoder is not None else {"backend": args.backend}
        return Index.load(folder, encoder, lock=True, lock_timeout=args.wait, **options)


def _check_document_options(args: argparse.Namespace) -> None:
    if args.no_chunk and (args.max_tokens is not None or args.overlap is not None):
        raise UsageError("--no-chunk embeds whole documents: drop --max-tokens and --overlap")


def _documents(args: argparse.Namespace) -> Any:
    """The documents of SOURCES, read lazily (missing sources are named at once)."""
    from ferris_jax.retrieval.sources import read_documents

    return read_documents(
        args.sources, text_field=args.text_field, id_field=args.id_field, encoding=args.encoding
    )


_CHUNKING_OPTIONS = {"max_tokens": "--max-tokens", "overlap": "--overlap"}


def _index_chunking(index: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The chunking of this run: the index's own where it has one (a different --max-tokens,
    --overlap or --no-chunk is refused), else the options'."""
    from ferris_jax.retrieval.index import ChunkingMismatch

    try:
        return index.chunking_for(
            args.max_tokens, args.overlap, whole_documents=True if args.no_chunk else None
        )
    except ChunkingMismatch as e:

        def flag(key: str, value: Any) -> str:
            if key == "whole_documents":
                return "--no-chunk" if value else "chunks (no --no-chunk)"
            return f"{_CHUNKING_OPTIONS[key]} {value}"

        have = ", ".join(flag(k, v) for k, v in e.chunking.items())
        asked = ", ".join(flag(k, v) for k, v in e.conflicts.items())
        raise UsageError(
            f"the index's documents were chunked with {have}; {asked} would mix two chunk sets "
            "in one index: drop the option to continue with the index's chunking, or build a "
            "new index"
        ) from None


_PROGRESS_SECONDS = 10.0  # between progress lines when stderr is not a terminal


def _progress(args: argparse.Namespace) -> Any:
    """The progress of chunks, unless --no-progress: a bar on a terminal, else (a log, a pipe)
    a plain line every `_PROGRESS_SECONDS`, where a bar's carriage returns would be noise."""
    from tqdm.auto import tqdm

    if not args.no_progress and not sys.stderr.isatty():
        return _LogProgress(_PROGRESS_SECONDS)
    show = not args.no_progress
    return tqdm(unit=" chunks", dynamic_ncols=True, file=sys.stderr, disable=not show)


class _LogProgress(contextlib.AbstractContextManager):
    """As much of tqdm as `_ingest` uses, printing `ferris-jax: 1200 chunks, 150 documents
    (40.1 chunks/s)` to stderr at most every `seconds`."""

    def __init__(self, seconds: float):
        self.seconds, self.n, self.postfix = seconds, 0, ""
        self.start = self.last = time.monotonic()

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.seconds:
            self.last = now
            rate = self.n / max(now - self.start, 1e-9)
            postfix = f", {self.postfix}" if self.postfix else ""
            print(f"{PROG}: {self.n} chunks{postfix} ({rate:.1f} chunks/s)", file=sys.stderr)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s


def _ingest(index: Any, folder: Path, args: argparse.Namespace, documents: Any = None) -> None:
    """Bring SOURCES into `index` (`retrieval.ingest`: new and changed documents embedded,
    unchanged ones skipped, an interrupted run's documents finished), saving it to `folder`
    after about every --save-every chunks; print the summary line."""
    from ferris_jax.retrieval.ingest import DocumentTooLong, ingest

    start = time.perf_counter()
    chunking = _index_chunking(index, args)
    with _progress(args) as bar:

        def progress(counts: Any) -> None:
            bar.update(1)
            bar.set_postfix_str(f"{counts.read} documents", refresh=False)

        try:
            counts = ingest(
                index,
                _documents(args) if documents is None else documents,
                chunking=chunking,
                folder=folder,
                save_every=args.save_every,
                batch_size=args.batch_size,
                prune_sources=args.sources if args.prune else None,
                on_chunk=progress,
            )
        except DocumentTooLong as e:
            raise CommandError(str(e)) from None
    seconds = time.perf_counter() - start
    changed = f", {counts.updated} changed" if counts.updated else ""
    resumed = f", {counts.resumed} finished from an interrupted run" if counts.resumed else ""
    pruned = f", {counts.removed} removed (source gone)" if args.prune else ""
    print(
        f"{PROG}: {counts.read} documents read, {counts.added} added{changed}{resumed} "
        f"({counts.skipped} already in the index, skipped){pruned}, {counts.chunks} chunks "
        f"in {seconds:.2f} s ({counts.chunks / max(seconds, 1e-9):.1f} chunks/s) -> {folder}",
        file=sys.stderr,
    )


def _index_build(args: argparse.Namespace) -> int:
    _check_document_options(args)
    given = [args.coordinator, args.processes, args.process_id]
    if any(v is not None for v in given):
        return _index_build_in_parts(args)
    return _build(Path(args.output), args, "--output")


def _build(
    folder: Path, args: argparse.Namespace, name: str, encoder: Any = None, documents: Any = None
) -> int:
    """Build (or continue) the index at `folder` from SOURCES (or `documents`)."""
    from ferris_jax.retrieval import store
    from ferris_jax.retrieval.store import MANIFEST

    shown = f"{name} {folder}"
    created = not folder.exists()
    exists = (folder / MANIFEST).is_file()
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"{shown} exists and is not a folder")
    if (
        not exists
        and folder.is_dir()
        and any(p.name not in (store.WRITE_LOCK, store.READ_LOCK) for p in folder.iterdir())
    ):
        raise CommandError(f"{shown} is a non-empty folder that holds no index; name a new folder")
    _documents(args)  # a missing or unreadable source fails here, before the model loads
    encoder = encoder or _load(args)
    from ferris_jax.retrieval.index import Index
    from ferris_jax.retrieval.store import IndexFormatError

    if not exists:
        index = Index(encoder, precision=args.precision or "float32")
        with _writing(args.wait):
            try:
                index.lock(folder, timeout=args.wait)
            except ValueError:  # another build saved an index there first: continue it
                if not (folder / MANIFEST).is_file():
                    raise
                exists = True
    if exists:
        try:
            index = _open_index_for_writing(str(folder), args, encoder)
        except IndexFormatError as e:
            raise CommandError(
                f"cannot continue the index at {shown}: {e}; or choose another --output"
            ) from None
        if args.precision is not None and args.precision != index.precision:
            raise CommandError(
                f"the index at {shown} searches in {index.precision}, not "
                f"--precision {args.precision}; drop --precision to continue it"
            )
    try:
        _ingest(index, folder, args, documents)
    except BaseException:
        if created and index.path is None:  # nothing saved: leave no folder behind
            store.remove_unused_folder(folder)  # under the lock: a waiting writer retries
            index.close()
        raise
    return 0


def _index_build_in_parts(args: argparse.Namespace) -> int:
    """One process of a build over several: embed this process's share of the documents into
    its part (OUTPUT.parts/part-I-of-N), wait for every process, and (process 0) merge the
    parts into OUTPUT. Every process leaves when the merged index is saved."""
    from ferris_jax.retrieval.index import Index
    from ferris_jax.retrieval.store import MANIFEST
    from ferris_jax.runtime import distributed

    flags = {"--coordinator": args.coordinator, "--processes": args.processes}
    flags["--process-id"] = args.process_id
    missing = [flag for flag, value in flags.items() if value is None]
    if missing:
        raise UsageError(f"a build over several processes needs {', '.join(missing)} as well")
    if args.process_id >= args.processes:
        raise UsageError(f"--process-id must be below --processes {args.processes}")
    folder = Path(args.output)
    if (folder / MANIFEST).is_file() or (folder.is_dir() and any(folder.iterdir())):
        raise CommandError(
            f"--output {args.output} is not empty: a build over several processes writes a new "
            "index (its parts continue an interrupted build); name a new folder, or add "
            "documents to that index with 'ferris-jax index add'"
        )
    _documents(args)  # a missing source fails here, before joining the other processes
    processes = distributed.initialize(args.coordinator, args.processes, args.process_id)
    parts = [
        _parts_folder(folder) / f"part-{i:03d}-of-{processes.count:03d}"
        for i in range(processes.count)
    ]
    encoder = _load(args)
    mine = distributed.share(_documents(args), processes)
    _build(parts[processes.index], args, "part", encoder, mine)
    distributed.barrier("index build: parts saved")
    if processes.index == 0:
        merged = Index.merge(parts, folder, encoder=encoder)
        print(
            f"{PROG}: merged {len(parts)} parts ({len(merged)} chunks) -> {folder}; the parts "
            f"stay in {_parts_folder(folder)} until you remove them",
            file=sys.stderr,
        )
    distributed.barrier("index build: merged")
    return 0


def _parts_folder(output: Path) -> Path:
    """Where the processes of a build into `output` keep their parts: beside it."""
    return output.parent / f"{output.name}.parts"


def _index_add(args: argparse.Namespace) -> int:
    _check_document_options(args)
    folder = _index_folder(args.index)
    _documents(args)
    index = _open_index_for_writing(args.index, args)
    _ingest(index, folder, args)
    return 0


def _index_remove(args: argparse.Namespace) -> int:
    index = _open_index_for_writing(args.index, args)
    if args.document:  # a document id, or the file the documents were read from
        found = {name: index.find_documents(name) for name in args.ids}
    else:
        hits = index.get(args.ids)
        found = {name: [hit.id] if hit else [] for name, hit in zip(args.ids, hits, strict=True)}
    unmatched = [name for name, ids in found.items() if not ids]
    what = "document id or source file" if args.document else "chunk id"
    if len(unmatched) == len(args.ids):
        hint = "" if args.document else "; to remove whole documents, pass --document"
        raise CommandError(
            f"no {what} of the index matches {', '.join(map(repr, unmatched))}{hint} "
            f"('{PROG} search {args.index} QUERY --json' shows ids and sources); "
            "the index is unchanged"
        )
    if unmatched:
        print(f"{PROG}: not in the index: {', '.join(map(repr, unmatched))}", file=sys.stderr)
    matched = [i for ids in found.values() for i in ids]
    removed = index.remove(matched, by_document=args.document)
    if args.compact:
        index.compact()
    index.save()
    n = len(matched)
    documents = f" ({n} document{'' if n == 1 else 's'})" if args.document else ""
    print(
        f"{PROG}: removed {removed} item{'' if removed == 1 else 's'}{documents}; "
        f"{len(index)} left{' (compacted)' if args.compact else ''}",
        file=sys.stderr,
    )
    return 0


def _index_merge(args: argparse.Namespace) -> int:
    from ferris_jax.retrieval.index import Index
    from ferris_jax.retrieval.merge import MergeError
    from ferris_jax.retrieval.store import IndexFormatError

    for part in args.parts:  # a missing part is named before the model loads
        _index_folder(part)
    with _writing(args.wait):
        try:
            index = Index.merge(
                args.parts, args.output, lock_timeout=args.wait, backend=args.backend
            )
        except (MergeError, IndexFormatError) as e:
            raise CommandError(str(e)) from None
    n = len(args.parts)
    print(
        f"{PROG}: merged {n} part{'' if n == 1 else 's'}, {len(index):,} items -> {args.output}",
        file=sys.stderr,
    )
    return 0


def _index_info(args: argparse.Namespace) -> int:
    info = _open_index(args.index, args.backend).info()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key + ':':<{width + 1}} {_human(value)}")
    return 0


def _search(args: argparse.Namespace) -> int:
    search_filter = None
    if args.filter is not None:
        from ferris_jax.retrieval import filters

        try:
            search_filter = json.loads(args.filter)
        except json.JSONDecodeError as e:
            raise UsageError(
                f"--filter {args.filter!r} is not valid JSON ({e.msg} at column {e.colno + 1}); "
                """write it like '{"source": "docs/a.md"}'"""
            ) from None
        try:
            filters.to_sql(search_filter)
        except (TypeError, ValueError) as e:
            raise UsageError(f"--filter: {e}") from None
    index = _open_index(args.index, args.backend)
    reranker = None
    if args.rerank is not None:
        import ferris_jax

        reranker = ferris_jax.load_reranker(args.rerank, backend=args.backend)
    results = index.search(
        list(args.queries), top_k=args.top_k, filter=search_filter, by_document=args.by_document,
        mode=args.mode, candidates=args.candidates, rerank=reranker,
    )  # fmt: skip
    for query, hits in zip(args.queries, results, strict=True):
        if args.json:
            for rank, hit in enumerate(hits, start=1):
                record = {"query": query, "rank": rank, **dataclasses.asdict(hit)}
                print(json.dumps(record, ensure_ascii=False))
        else:
            if len(args.queries) > 1:
                print(f"query: {query}")
            print_hits(hits)
            if len(args.queries) > 1:
                print()
    return 0


def print_hits(hits: Sequence[Any], width: int | None = None) -> None:
    """A table of hits: rank, score, id and the passage on one line, cut to the terminal width."""
    if not hits:
        print("(no results)")
        return
    import shutil

    width = width or shutil.get_terminal_size().columns
    rows = [("RANK", "SCORE", "ID")]
    rows += [(str(r), f"{h.score:.4f}", h.id) for r, h in enumerate(hits, start=1)]
    widths = [max(len(row[c]) for row in rows) for c in range(3)]
    room = max(width - sum(widths) - 2 * 3, 20)
    for r, row in enumerate(rows):
        text = "TEXT" if r == 0 else " ".join((hits[r - 1].text or "").split())
        if len(text) > room:
            text = text[: room - 1] + "…"
        print(f"{row[0]:>{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:<{widths[2]}}  {text}")


# ---------------------------------------------------------------- entry point
def _one_line(message: str) -> str:
    """Multi-line library messages (e.g. a list of checkpoint problems) joined into one line."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def _warn(message: Any, category: type[Warning], *_: Any, **__: Any) -> None:
    print(f"{PROG}: warning: {_one_line(str(message))}", file=sys.stderr)


def _error(message: str) -> None:
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `ferris-jax` command line.

    Args:
        argv: the arguments after the program name (default: `sys.argv[1:]`).

    Returns:
        The exit status: 0 on success, 1 for a runtime error, 2 for a usage error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        _error(str(e))
        return 2
    except SystemExit as e:  # --help and --version
        return e.code if isinstance(e.code, int) else 0
    with warnings.catch_warnings():
        warnings.showwarning = _warn  # restored on exit from the block
        try:
            return args.run(args)
        except UsageError as e:
            if args.debug:
                raise
            _error(str(e))
            return 2
        except BrokenPipeError:
            # The reader went away (`| head`); stop quietly, and keep Python's final flush of
            # stdout from raising again.
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        except CommandError as e:
            if args.debug:
                raise
            _error(str(e))
            return 1
        except OSError as e:  # includes ModelNotFoundError
            if args.debug:
                raise
            has_file = e.filename is not None and e.strerror
            _error(f"{e.filename}: {e.strerror}" if has_file else str(e))
            return 1
        except (ValueError, TypeError) as e:  # CheckpointError, rejected values and inputs
            if args.debug:
                raise
            _error(str(e))
            return 1
        except KeyboardInterrupt:
            _error("interrupted")
            return 130
        except Exception as e:  # a bug or an unforeseen failure: still one line
            if args.debug:
                raise
            _error(f"{type(e).__name__}: {e} (run with --debug for the traceback)")
            return 1


def _exit_on_interrupt() -> None:
    """Make Ctrl-C end the run at once, whatever the main thread is doing (importing JAX,
    compiling, waiting on the device): SIGINT is blocked in every thread started from here on
    but one, which waits for it, removes the temporary files of unfinished writes and exits
    with status 130. Python's own handler runs only between bytecodes of the main thread, and
    an interrupt that lands in a library's clean-up callback is lost."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: Python's KeyboardInterrupt
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    def wait() -> None:
        signal.sigwait({signal.SIGINT})
        remove_pending_files()
        os.write(2, f"{PROG}: error: interrupted\n".encode())
        os._exit(130)

    threading.Thread(target=wait, name="ferris-jax-interrupt", daemon=True).start()


def console() -> int:
    """The `ferris-jax` console script: `main` with Ctrl-C acting at once."""
    _exit_on_interrupt()
    return main()


if __name__ == "__main__":
    raise SystemExit(console())
