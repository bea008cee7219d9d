"""The numerflow command line: each command parses its options, calls one library function and
prints what it returned. Stage modules are imported inside the commands so that `numerflow --help`
stays fast (no torch import)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import List, Optional

import typer

from numerflow import __version__
from numerflow import config as cfg
from numerflow.errors import NumerflowError

app = typer.Typer(
    help="numerflow: download, prepare, train, validate, predict and submit for the Numerai tournament.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold the secret key
    rich_markup_mode=None,
)


def reports_errors(command):
    """Turn numerflow's expected failures into one `Error: ...` line and exit 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except NumerflowError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def split_list(value: Optional[str]) -> Optional[list[str]]:
    """'a,b, c' → ['a', 'b', 'c']; None stays None."""
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def int_list(value: str) -> list[int]:
    try:
        widths = [int(x) for x in split_list(value) or []]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got '{value}'") from None
    if not widths or min(widths) < 1:
        raise typer.BadParameter("layer widths must be positive integers")
    return widths


def version_callback(value: bool):
    if value:
        typer.echo(f"numerflow {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                 help="Print the version and exit."),
):
    """numerflow: a fast, memory-lean PyTorch pipeline for the Numerai tournament."""
    # numerflow.toml tables ([train], [prepare], ...) become defaults that flags and NUMERFLOW_*
    # variables override: click's default_map ranks below both.
    try:
        settings = cfg.load_toml()
    except NumerflowError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    ctx.default_map = {name.replace("_", "-"): table for name, table in settings.items()
                       if isinstance(table, dict)}


DataDir = typer.Option(cfg.DEFAULT_DATA_DIR, "--data-dir", envvar="NUMERFLOW_DATA_DIR",
                       help="Folder holding <version>/ and prepared/.")


@app.command()
@reports_errors
def download(
    data_dir: Path = DataDir,
    version: Optional[str] = typer.Option(None, "--version", envvar="NUMERFLOW_VERSION",
                                          help="Dataset version, e.g. v5.2 (default: the newest)."),
    live_only: bool = typer.Option(False, "--live-only", help="Only live data, live example preds and features.json."),
    round_num: Optional[int] = typer.Option(None, "--round", help="Fetch a past round's live data."),
    force: bool = typer.Option(False, "--force", help="Fetch again even when files are complete locally."),
    synthetic: bool = typer.Option(False, "--synthetic", help="Write the built-in synthetic data set instead (offline)."),
    eras: int = typer.Option(cfg.SyntheticConfig.eras, "--eras", min=12, help="Synthetic: number of train+validation eras."),
    rows_per_era: int = typer.Option(cfg.SyntheticConfig.rows_per_era, "--rows-per-era", min=10, help="Synthetic: rows per era."),
    features: int = typer.Option(cfg.SyntheticConfig.features, "--features", min=8, help="Synthetic: number of features."),
    seed: int = typer.Option(cfg.SyntheticConfig.seed, "--seed", help="Synthetic: random seed."),
):
    """Download the Numerai data set into DATA_DIR/<version>/ (or write synthetic data offline).

    Example: numerflow download --data-dir data --version v5.2
    """
    if synthetic:
        from numerflow.synthetic import write_synthetic

        out = write_synthetic(cfg.SyntheticConfig(data_dir=data_dir, eras=eras, rows_per_era=rows_per_era,
                                                  features=features, seed=seed))
        typer.echo(f"Synthetic data written to {out}")
        return
    from numerflow.download import download as run_download

    result = run_download(cfg.DownloadConfig(data_dir=data_dir, version=version, live_only=live_only,
                                             round=round_num, force=force))
    typer.echo(str(result))


@app.command()
@reports_errors
def prepare(
    data_dir: Path = DataDir,
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="A version folder (default: the newest under --data-dir)."),
    feature_set: str = typer.Option(cfg.PrepareConfig.feature_set, "--feature-set", envvar="NUMERFLOW_FEATURE_SET",
                                    help="Any feature set in features.json (small, medium, all, ...)."),
    target: str = typer.Option(cfg.PrepareConfig.target, "--target", help="Main target column."),
    aux_targets: Optional[str] = typer.Option(None, "--aux-targets", help="Auxiliary targets: NAME,... or all."),
    downsample: int = typer.Option(cfg.PrepareConfig.downsample, "--downsample", min=1, help="Keep every K-th training era (1 keeps all)."),
    embargo: int = typer.Option(cfg.PrepareConfig.embargo, "--embargo", min=0, help="Eras dropped between the last train era and validation."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Output folder (default: DATA_DIR/prepared)."),
):
    """Select features and targets, keep them int8, and write prepared/train+validation.parquet.

    Example: numerflow prepare --feature-set medium --aux-targets all --downsample 4
    """
    from numerflow.prepare import prepare as run_prepare

    result = run_prepare(cfg.PrepareConfig(data_dir=data_dir, dataset=dataset, feature_set=feature_set,
                                           target=target, aux_targets=split_list(aux_targets) or [],
                                           downsample=downsample, embargo=embargo, out_dir=out_dir))
    typer.echo(str(result))


# @@ train command(s) go here @@


# @@ validate command(s) go here @@


# @@ predict command(s) go here @@


# @@ submit command(s) go here @@


# @@ round/export command(s) go here @@


@app.command()
@reports_errors
def quickstart(
    folder: Path = typer.Option(Path("numerflow-quickstart"), "--dir", help="Fresh folder for every artifact."),
):
    """Run the whole pipeline offline on built-in synthetic data: download --synthetic, prepare,
    train, validate, predict, submit --dry-run. Prints each artifact's path and the validation summary.

    Example: numerflow quickstart --dir /tmp/nf-demo
    """
    from numerflow.quickstart import quickstart as run_quickstart

    typer.echo(str(run_quickstart(folder, say=typer.echo)))


def main():
    app(prog_name="numerflow")
