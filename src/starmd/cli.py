"""The ``starmd`` command line: a thin layer over the package's functions.

Heavy libraries (torch, OpenMM, mdtraj) are imported inside each command so that ``starmd --help``
stays fast. Errors that are the user's to fix (:class:`starmd.errors.StarmdError`) print one line
and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import typer

from starmd import __version__

app = typer.Typer(
    name="starmd",
    help="Generate long protein MD trajectories with STAR-MD, simulate reference MD, train, evaluate.",
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


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``starmd`` console script."""
    from starmd.errors import StarmdError

    try:
        app(args=argv, standalone_mode=False)
    except StarmdError as err:
        if _state["debug"]:
            raise
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.YELLOW, err=True)
        sys.exit(130)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code or 0)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
