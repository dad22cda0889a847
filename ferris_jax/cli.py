"""The `ferris-jax` command line: embed a text file, describe a model, list the presets.

    ferris-jax embed texts.txt -o vectors.npy
    cat texts.txt | ferris-jax embed -m e5-small-v2 --prompt-name query > vectors.jsonl
    ferris-jax info -m all-MiniLM-L6-v2
    ferris-jax models
    ferris-jax doctor

Every expected failure prints one line, `ferris-jax: error: <message>`, and exits 2 for usage
errors (found before any work starts) or 1 for runtime errors. JAX and the model are imported
only inside the commands that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
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
        help="auto (default, or $FERRIS_JAX_BACKEND), cpu, cuda, rocm, tpu, METAL, mps, mtl",
    )
    parent.add_argument(
        "--max-seq-length",
        type=_int_at_least(2),
        metavar="N",
        help="tokens per text, special tokens included (default: the model's)",
    )
    return parent


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
    return parser


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
        *name, dtype=args.dtype, max_seq_length=args.max_seq_length, backend=args.backend
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
    print(
        f"{PROG}: embedded {n} text{'' if n == 1 else 's'}, dim {dim}, in {encoded - loaded:.2f} s "
        f"(model load {loaded - start:.2f} s) -> {'<stdout>' if to_stdout else args.output}",
        file=sys.stderr,
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    import jax

    info = _load(args).info()
    info["ferris_jax"] = __version__
    info["jax"] = jax.__version__
    info["devices"] = [str(d) for d in jax.devices()]
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key + ':':<{width + 1}} {_human(value)}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from ferris_jax.doctor import report

    result = report(args.backend)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key + ':':<{width + 1}} {_human(value)}")
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
    import dataclasses

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
