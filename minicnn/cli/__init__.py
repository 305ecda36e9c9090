"""Command line: parses options, builds the typed configs and calls the library. Heavy modules are
imported inside the commands so that `minicnn --help` starts fast.

    data.py     minicnn data prepare / info
    model.py    minicnn train / eval / flops / compact
    study.py    minicnn prune / sweep / plot / report
    sensitivity.py  minicnn sensitivity
    export.py   minicnn export / import
    common.py   options and helpers the commands share
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import click

from minicnn.errors import MiniCNNError, one_line

#: Exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


#: How long a Ctrl-C that Python could not raise waits before it is sent again (see keep_interrupts).
REDELIVERY_DELAY_S = 0.05


def keep_interrupts(previous):
    """A sys.unraisablehook that keeps Ctrl-C from being lost. Python raises KeyboardInterrupt in whatever
    code runs when SIGINT arrives; in a weakref callback or a __del__ it can only print the exception and
    go on (h5py's registry of open objects runs such a callback each time an HDF5 object is freed, many
    per checkpoint written), and the run would carry on. Such an interrupt is sent again a moment later,
    from a thread, until it lands in code that can stop; every other exception goes to ``previous``."""

    def hook(unraisable):
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous(unraisable)
            return
        # not from here: this hook's own code would catch it again, and print it
        timer = threading.Timer(REDELIVERY_DELAY_S, os.kill, (os.getpid(), signal.SIGINT))
        timer.daemon = True
        timer.start()

    return hook


class _CleanErrors(click.Group):
    """The minicnn group: every problem ends as one line `Error: ...` on stderr and a non-zero exit,
    never a traceback. Library errors (MiniCNNError) carry their own message; click's usage errors are
    joined onto one line with a pointer to --help; Ctrl-C exits 130 (rerunning resumes)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MiniCNNError as exc:
            raise click.ClickException(one_line(exc)) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        prog_name = prog_name or "minicnn"  # also under `python -c` or -m, whose argv[0] says nothing
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        previous_hook = sys.unraisablehook
        sys.unraisablehook = keep_interrupts(previous_hook)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "minicnn"
            click.echo(f"Error: {one_line(exc.format_message())} (see '{where} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Error: interrupted; files already written are intact, and rerunning the same command "
                       "resumes", err=True)
            sys.exit(EXIT_INTERRUPTED)
        finally:
            sys.unraisablehook = previous_hook
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_CleanErrors)
@click.version_option(package_name="minicnn")
def cli():
    """minicnn: train, prune and measure a small CNN on CIFAR-10, from scratch in NumPy/Numba."""


def _register() -> None:
    from minicnn.cli import data, export, model, sensitivity, study

    cli.add_command(data.data)
    for command in (model.train, model.eval_cmd, model.flops_cmd, model.compact_cmd, study.prune, study.sweep,
                    study.plot_cmd, study.report_cmd, sensitivity.sensitivity_cmd, export.export_cmd,
                    export.import_cmd):
        cli.add_command(command)


_register()
