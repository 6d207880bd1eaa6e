"""The ``starmd`` command line: every command, a thin layer over the package's functions.

One module per command family, registered on one typer app here::

    data.py       inspect, prepare, data atlas-download
    simulate.py   simulate, corpus build (reference MD with OpenMM)
    train.py      train
    generate.py   generate (one structure, or a list: lists.py parses folders, CSVs, shards)
    relax.py      relax (restrained minimization of trajectory frames; generate --relax)
    evaluate.py   evaluate
    fidelity.py   fidelity (generate + evaluate on a corpus split, bootstrap over proteins)
    bench.py      bench
    demo.py       demo

Lists of proteins and the replicas and proteins of one run fan out through one worker-pool
runner, :func:`starmd.workers.run_jobs`. Heavy libraries (torch, OpenMM, mdtraj) are imported
inside each command so that ``starmd --help`` stays fast. Errors that are the user's to fix
(:class:`starmd.errors.StarmdError`) print one line and exit with status 2; a failed read or
write (``OSError``: disk full, read-only or vanished folder) prints one line naming the file and
how to continue, and exits with status 1; Ctrl-C prints how to continue and exits with 130.
``--debug`` shows the traceback instead. docs/faults.md lists what each command leaves behind.
"""

from __future__ import annotations

import sys

import typer

from starmd import __version__
from starmd.cli.bench import bench
from starmd.cli.data import atlas_download, inspect, prepare
from starmd.cli.demo import demo
from starmd.cli.evaluate import evaluate_command
from starmd.cli.fidelity import fidelity
from starmd.cli.generate import generate
from starmd.cli.relax import relax_command
from starmd.cli.simulate import corpus_app, simulate_command
from starmd.cli.train import train

app = typer.Typer(
    name="starmd",
    help="Generate long protein MD with STAR-MD; simulate reference MD, train, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"starmd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    _state["debug"] = debug


# registration order = the order of ``starmd --help``
data_app = typer.Typer(help="Fetch MD datasets (ATLAS).", no_args_is_help=True)
data_app.command("atlas-download")(atlas_download)
app.add_typer(data_app, name="data")
app.command("simulate")(simulate_command)
app.add_typer(corpus_app, name="corpus")
app.command("evaluate")(evaluate_command)
app.command()(fidelity)
app.command()(inspect)
app.command()(prepare)
app.command()(train)
app.command()(generate)
app.command("relax")(relax_command)
app.command()(bench)
app.command()(demo)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``starmd`` console script."""
    from starmd.cli.common import os_error_line, resume_hint
    from starmd.errors import StarmdError

    argv = sys.argv[1:] if argv is None else argv
    try:
        # typer turns Ctrl-C inside a command into the return value 130 in this mode
        if app(args=argv, standalone_mode=False) == 130:
            raise KeyboardInterrupt
    except StarmdError as err:
        if _state["debug"]:
            raise
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except OSError as err:
        if _state["debug"]:
            raise
        line = os_error_line(err, resume_hint(argv))
        typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        hint = resume_hint(argv)
        typer.secho("interrupted" + (f"; {hint}" if hint else ""), fg=typer.colors.YELLOW, err=True)
        sys.exit(130)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code or 0)
    except Exception as exc:  # usage errors arrive here in non-standalone mode
        try:
            from click import exceptions as click_errors
        except ImportError:  # typer >= 0.20 vendors its own copy of click
            from typer._click import exceptions as click_errors

        if isinstance(exc, click_errors.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            sys.exit(1)
        raise
