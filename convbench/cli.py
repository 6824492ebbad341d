"""The convbench command line (click). Commands import what they need when they run, so
`convbench --help` loads no backend and compiles nothing."""
from __future__ import annotations

import os
import sys

import click


def _split(value: str | None):
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="convbench")
def main():
    """convbench: deep-learning kernels implemented several ways, proven equal, timed on real shapes."""


@main.command()
def backends():
    """List the backends, whether each can run here (and why not), and their ops."""
    from convbench.backends import list_backends
    for info in list_backends():
        state = "available" if info.available else f"unavailable: {info.reason}"
        click.echo(f"{info.name:<11} {state}")
        click.echo(f"{'':<11} {info.description}")
        click.echo(f"{'':<11} ops: {', '.join(info.ops) or '-'}")


@main.command()
@click.option("--cases", "cases", default="all", show_default=True,
              help="case list: all, conv-edge, conv-random, ... (see convbench.cases)")
@click.option("--backends", "backend_list", default=None,
              help="comma-separated backends (default: all registered)")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cuda-sim", is_flag=True,
              help="run numba-cuda kernels on Numba's CPU simulator (tiny cases only)")
def verify(cases, backend_list, dtype, seed, cuda_sim):
    """Run every backend on a case list against the float64 reference; print the matrix.

    Exits 1 if any result is FAILED or ERROR.
    """
    if cuda_sim:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    from convbench.verify_report import run_matrix
    ok = run_matrix(cases, _split(backend_list), dtype, seed, click.echo)
    sys.exit(0 if ok else 1)


@main.command()
@click.argument("image", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--backend", default="im2col", show_default=True)
@click.option("--out", "out_path", default="filters.png", show_default=True,
              type=click.Path(dir_okay=False, writable=True))
def filters(image, backend, out_path):
    """Apply the classic 3x3 filters to IMAGE (default: matplotlib's sample photograph) and write
    one figure comparing zero padding with reflect padding."""
    from convbench.filters import gallery
    click.echo(f"wrote {gallery(image, out_path, backend)}")


if __name__ == "__main__":  # pragma: no cover
    main()
