"""The vaeguard command line. Every command is a thin shell around library functions.

Exit codes: 0 done, 1 data or model error (message on stderr; traceback only with --debug),
2 usage error.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import VaeguardError
from .inputs import CHUNK_ROWS
from .limits import MAX_INTERPOLATION_STEPS, MAX_SAMPLES

app = typer.Typer(
    name="vaeguard",
    help="Likelihood-based anomaly detection with variational autoencoders.\n\n"
    "Train on normal data only; a sample is anomalous when the model finds it unlikely.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)

_state = {"debug": False, "quiet": False}


def _usage_error(check: Callable, value, *args):
    """check(value, *args), its ValueError turned into a usage error (exit 2) for the option."""
    try:
        return check(value, *args)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _choice(value: str, accepted: Sequence[str]) -> str:
    from .config import either, show_value

    if value not in accepted:
        raise typer.BadParameter(f"must be {either(accepted)}, got {show_value(value)}")
    return value


def _check_device(value: Optional[str]) -> Optional[str]:
    from .config import check_device

    return None if value is None else _usage_error(check_device, value)


def _detector_option(name: str) -> Callable:
    """Callback for an option that sets estimator parameter `name`: the library's own check."""

    def check(value):
        from .config import check_detector_value

        if value is not None:
            _usage_error(check_detector_value, name, value)
        return value

    return check


def _check_config(path: Optional[Path]) -> Optional[Path]:
    from .config import check_config_file
    from .errors import DataError

    try:
        return None if path is None else check_config_file(path)
    except DataError as exc:
        raise typer.BadParameter(str(exc)) from None


def _column_names(text: Optional[str]) -> Optional[list[str]]:
    """'a, b' -> ['a', 'b']; a usage error when the text names no column (',' is not 'every column')."""
    from .config import show_value

    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise typer.BadParameter(f"names no column, got {show_value(text)}: give comma-separated column names, or leave the option out")
    return names


# Options shared by several commands, declared once.
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML file (a regular file) with [detector] and [data] tables (see configs/); options given here override it.", exists=True, dir_okay=False, callback=_check_config)]
DeviceOpt = Annotated[Optional[str], typer.Option(help="Where to run: auto (CUDA when present; the default), cpu, cuda, cuda:N (the GPU numbered N) or mps.", callback=_check_device)]
def _check_threads(value: Optional[str]) -> Optional[int | str]:
    """'auto' or a positive integer (torch's CPU threads); a usage error otherwise."""
    if value is None or value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise typer.BadParameter(f"must be auto or a positive integer, got {value!r}")
    return n


ThreadsOpt = Annotated[Optional[str], typer.Option(help="CPU threads for torch: a number, or auto (the default: the cores other processes leave idle, so a busy machine is not oversubscribed).", callback=_check_threads)]
EpochsOpt = Annotated[Optional[int], typer.Option(help="Training epochs (maximum; early stopping may end sooner). Default: 50, or enough for 2,000 gradient steps on small data.", callback=_detector_option("epochs"))]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed, a 32-bit unsigned integer (default 0, or the config's random_state): same seed, same data, same model.", callback=_detector_option("random_state"))]


def _check_rate(value: Optional[float]) -> Optional[float]:
    from .calibration import check_rate

    try:
        return None if value is None else check_rate(value, "the rate")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _parse_hidden_dims(text: Optional[str]) -> Optional[tuple[int, ...]]:
    """'256,128' -> (256, 128); a usage error (exit 2) for anything but sizes the library takes."""
    from .config import check_detector_value

    if text is None:
        return None
    try:
        sizes = tuple(int(part.strip()) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated layer sizes such as 256,128, got {text!r}") from None
    _usage_error(check_detector_value, "hidden_dims", sizes)
    return sizes


def _check_channels(value: Optional[int]) -> Optional[int]:
    from .config import check_channels

    if value is not None:
        _usage_error(check_channels, value)
    return value


def _check_rule(value: str) -> str:
    from .calibration import LABEL_RULES

    return _choice(value, LABEL_RULES)


def _check_on_bad_row(value: str) -> str:
    from .inputs import ON_BAD_ROW

    return _choice(value, ON_BAD_ROW)


def _check_rows(value: int, option: str) -> None:
    """A usage error for more rows at a time than the memory budget holds at one float32 each."""
    from .limits import gib, memory_budget

    budget = memory_budget()  # a bad VAEGUARD_MEMORY_BUDGET_GB: its own one-line error, exit 1
    cap = budget // 4
    if value > cap:
        raise typer.BadParameter(
            f"at most {cap:,}: more rows cannot fit the memory budget of {gib(budget)} "
            f"(VAEGUARD_MEMORY_BUDGET_GB) even at one value each, got {value:,}", param_hint=option,
        )


def _guard(out: Optional[Path], *inputs: Optional[Path]) -> None:
    """Refuse, before any work, an output that is one of the inputs or a device/FIFO/folder."""
    from .atomic import check_output

    if out is not None:
        check_output(out, [i for i in inputs if i is not None])


def _guard_report(out_dir: Path, *inputs: Optional[Path]) -> None:
    """Refuse a report folder that is a file, or whose report files would replace an input."""
    from .atomic import check_output
    from .errors import DataError
    from .report import REPORT_FILES

    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir} is not a folder: choose a report folder with -o")
    for name in REPORT_FILES:
        check_output(out_dir / name, [i for i in inputs if i is not None])


FprOpt = Annotated[Optional[float], typer.Option(help="Target false-positive rate of the threshold on normal data, in (0, 1).", callback=_check_rate)]
ReportDirOpt = Annotated[Path, typer.Option("--out", "-o", help="Report folder (metrics.json, report.html, PNGs).", file_okay=False)]
OnBadRowOpt = Annotated[str, typer.Option(help="What to do with a CSV row holding a missing or non-numeric value: fail (stop, naming the row) or skip (count it, score the rest).", callback=_check_on_bad_row)]
ChunkOpt = Annotated[int, typer.Option(help="Rows (or images) read and scored at a time; bounds memory (at most what the memory budget holds).", min=1)]
NormalLabelOpt = Annotated[Optional[str], typer.Option(help="Label value of normal samples; every other value is an anomaly. Default: labels are 0/1 (1 = anomaly); for image folders the subfolder 'normal'.")]
LabelColumnOpt = Annotated[Optional[str], typer.Option(help="CSV column holding the labels (1 = anomaly, or see --normal-label).")]


def _print_version(value: bool) -> None:
    """`vaeguard X.Y.Z (torch A.B.C)`, read from the installed packages' metadata: importing
    torch to ask it would take a second or more."""
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    from ._version import __version__

    try:
        mine = version("vaeguard")
    except PackageNotFoundError:  # run from a source tree that was never installed
        mine = __version__
    try:
        torch = f"torch {version('torch')}"
    except PackageNotFoundError:
        torch = "torch not installed"
    typer.echo(f"vaeguard {mine} ({torch})")
    raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or training log.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the versions of vaeguard and PyTorch and exit.", callback=_print_version, is_eager=True)] = False,
) -> None:
    _state.update(debug=debug, quiet=quiet)
    if not debug:
        warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings as one 'warning: ...' line on stderr, without the source line."""
    typer.secho(f"warning: {message}", err=True, fg=typer.colors.YELLOW)


def _one_line(text: str) -> str:
    """`text` with every character that would break or hide a line (controls, separators) escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn data, model and file errors into a one-line message and exit code 1."""
    try:
        yield
    except (VaeguardError, ValueError, OSError) as exc:
        if _state["debug"]:
            raise
        message = _one_line(str(exc) or type(exc).__name__)
        typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt as exc:
        typer.secho("interrupted: no partial output was written", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=128 + getattr(exc, "signum", 2)) from None


@contextlib.contextmanager
def _progress(description: str, unit: str) -> Iterator:
    """A progress bar on stderr showing items done and items per second; yields advance(n)."""
    from rich.console import Console
    from rich.progress import Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            # completed / elapsed: rich's own `speed` stays empty with a few large advances (chunks)
            rate = task.completed / task.elapsed if task.elapsed else 0.0
            return Text(f"{task.completed:,.0f} {unit}  {rate:,.0f} {unit}/s")

    if _state["quiet"]:
        yield lambda n: None
        return
    columns = (SpinnerColumn(), TextColumn(description), Rate(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=None)
        yield lambda n: bar.advance(task, n)


def _detector_params(config: Optional[Path], **overrides) -> tuple[dict, dict]:
    """Estimator parameters (options over the config file over defaults) and the [data] table."""
    from .config import load_config, merge

    loaded = load_config(config) if config is not None else {"detector": {}, "data": {}}
    params = merge(loaded["detector"], overrides)
    params.setdefault("random_state", 0)  # the same command gives the same model
    params.setdefault("device", "auto")
    params["verbose"] = params.get("verbose", True) and not _state["quiet"]
    return params, loaded["data"]


def _print_auroc_table(metrics: dict, label: str) -> None:
    typer.echo(f"{label:>10}  AUROC against the normal test samples")
    for group, auroc in metrics["per_group"].items():
        typer.echo(f"{group:>10}  {auroc:.4f}")
    typer.echo(
        f"{'overall':>10}  {metrics['auroc']:.4f}  "
        f"(95% CI {metrics['auroc_ci_low']:.4f}-{metrics['auroc_ci_high']:.4f})"
    )


def _print_summary(summary, unit: str) -> None:
    typer.echo(f"scored {summary.n_scored:,} {unit}, flagged {summary.n_anomalies:,} as anomalous, failed {summary.n_failed:,}")
    for note in summary.notes:
        typer.echo(f"note: {note}")
    for where, reason in summary.failed[:5]:
        typer.echo(f"  failed {where}: {reason}", err=True)
    if summary.n_failed > 5:
        typer.echo(f"  ... and {summary.n_failed - 5} more (see the error column of {summary.output})", err=True)
    typer.echo(f"wrote {summary.output}")


def _image_shape(size: Optional[str], channels: Optional[int]) -> Optional[tuple[int, int, int]]:
    if size is None:
        if channels is not None:
            raise typer.BadParameter("--channels needs --image-size too", param_hint="--channels")
        return None
    from .errors import DataError
    from .limits import check_image_shape

    try:
        height, width = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"expected HEIGHTxWIDTH such as 28x28, got {size!r}", param_hint="--image-size") from None
    if height < 1 or width < 1:
        raise typer.BadParameter(f"height and width must be positive, got {size!r}", param_hint="--image-size")
    _check_channels(channels)
    try:
        check_image_shape((channels or 1, height, width))
    except DataError as exc:
        raise typer.BadParameter(str(exc), param_hint="--image-size") from None
    return (channels or 1, height, width)


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Normal data: a CSV file (.csv, .csv.gz), Parquet (a file, a folder or a quoted glob) or a folder of images.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model file to write.", dir_okay=False)],
    config: ConfigOpt = None,
    columns: Annotated[Optional[str], typer.Option(help="Tables: comma-separated feature columns (default: every numeric column).", callback=_column_names)] = None,
    exclude: Annotated[Optional[str], typer.Option(help="Tables: comma-separated columns to leave out.", callback=_column_names)] = None,
    id_column: Annotated[Optional[str], typer.Option(help="CSV: column identifying rows; kept in score outputs.")] = None,
    label_column: Annotated[Optional[str], typer.Option(help="CSV: column holding labels; never a feature, stored in the model so evaluate and calibrate read it.")] = None,
    image_size: Annotated[Optional[str], typer.Option(help="Images: resize to HEIGHTxWIDTH, e.g. 28x28 (default: the size every image shares; mixed sizes need this).")] = None,
    channels: Annotated[Optional[int], typer.Option(help="Images: 1 (grayscale) or 3 (RGB).", callback=_check_channels)] = None,
    architecture: Annotated[Optional[str], typer.Option(help="auto (mlp), mlp, or conv for images: more accurate on grey-level images, 4-5x the CPU time.", callback=_detector_option("architecture"))] = None,
    latent_dim: Annotated[Optional[int], typer.Option(help="Size of the latent code (at most the width limit, vaeguard.limits.MAX_WIDTH).", callback=_detector_option("latent_dim"))] = None,
    hidden_dims: Annotated[Optional[str], typer.Option(help="Comma-separated hidden layer sizes, e.g. 256,128 (each at most the width limit).", callback=_parse_hidden_dims)] = None,
    likelihood: Annotated[Optional[str], typer.Option(help="bernoulli (data in [0, 1]), gaussian, or auto (bernoulli for near-binary data in [0, 1], else gaussian).", callback=_detector_option("likelihood"))] = None,
    score_type: Annotated[Optional[str], typer.Option(help="auto (ratio for near-binary images of at least 16x16, fused with the gaussian likelihood, else elbo), elbo (negative ELBO), ratio, fused, recon, iwae or kl.", callback=_detector_option("score_type"))] = None,
    epochs: EpochsOpt = None,
    fpr: FprOpt = None,
    seed: SeedOpt = None,
    out_of_core: Annotated[bool, typer.Option("--out-of-core", help="Tables: stream shuffled mini-batches from disk instead of loading the table, so memory stays flat whatever the file size (validation and calibration rows chosen by a seeded hash of each row).")] = False,
    buffer_rows: Annotated[Optional[int], typer.Option(help="--out-of-core: rows in the shuffle buffer (default 65,536; at most what the memory budget holds).", min=2)] = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Train a detector on normal data and save it as a single model file.

    Example: vaeguard train normal.csv -o model.vgm --config configs/tabular.toml --epochs 50
    """
    from .calibration import describe_threshold_rule
    from .estimator import VAEAnomalyDetector
    from .sources import open_source
    from .tabular import ColumnRoles

    with _errors():
        _guard(out, data, config)
        params, data_cfg = _detector_params(
            config, architecture=architecture, latent_dim=latent_dim, likelihood=likelihood,
            score_type=score_type, epochs=epochs, fpr=fpr, random_state=seed, hidden_dims=hidden_dims, device=device, threads=threads,
        )
        source = open_source(data)
        kind = source.kind
        other_kind = {
            "table": {"--image-size": image_size, "--channels": channels},
            "images": {"--columns": columns, "--exclude": exclude, "--id-column": id_column, "--label-column": label_column, "--out-of-core": out_of_core or None},
        }[kind]
        for option, value in other_kind.items():
            if value is not None:
                what = "image folders" if kind == "table" else "tables"
                raise typer.BadParameter(f"is for {what}; {data} is {'a table' if kind == 'table' else 'an image folder'}", param_hint=option)
        if buffer_rows is not None and not out_of_core:
            raise typer.BadParameter("goes with --out-of-core", param_hint="--buffer-rows")
        roles = dict(
            columns=columns or data_cfg.get("columns"), exclude=exclude or data_cfg.get("exclude"),
            id_column=id_column or data_cfg.get("id_column"), label_column=label_column or data_cfg.get("label_column"),
        )
        if out_of_core:
            from .distributed import launched_by_torchrun

            if launched_by_torchrun():
                raise typer.BadParameter("runs in one process: under torchrun, train without it", param_hint="--out-of-core")
            if buffer_rows is not None:
                _check_rows(buffer_rows, "--buffer-rows")
            _train_out_of_core(data, out, params, buffer_rows, **roles)
            return
        size = image_size or ("x".join(map(str, data_cfg["image_size"])) if "image_size" in data_cfg else None)
        shape = _image_shape(size, channels or data_cfg.get("channels"))
        training = source.read_training(ColumnRoles(**roles), image_shape=shape)
        from . import distributed

        params["device"] = distributed.init_from_env(params["device"])  # under torchrun: join the process group
        rank, size = distributed.world()
        if rank == 0:
            for note in training.notes:
                typer.echo(f"note: {note}", err=True)
        detector = VAEAnomalyDetector(**{**params, "verbose": params["verbose"] and rank == 0})
        if rank == 0:
            processes = f" in {size} processes" if size > 1 else ""
            typer.echo(f"training on {len(training.X):,} samples x {training.X.shape[1]:,} features from {data}{processes}", err=True)
        detector.fit(training.X, input_spec=training.input_spec)
        if rank == 0:
            metadata = {"trained_on": str(data)} | ({"processes": size} if size > 1 else {})
            detector.save(out, metadata=metadata, inputs=[data, config])
        distributed.shutdown()
        if rank != 0:
            return
    for where, reason in training.skipped:
        typer.echo(f"  skipped {where}: {reason}", err=True)
    typer.echo(
        f"trained {detector.n_epochs_} epochs, threshold {detector.threshold_:.6g} ({describe_threshold_rule(detector.threshold_rule_)}); "
        f"wrote {out}"
    )


def _train_out_of_core(data: Path, out: Path, params: dict, buffer_rows: Optional[int], **columns) -> None:
    from .calibration import describe_threshold_rule
    from .estimator import VAEAnomalyDetector
    from .streaming import TableStream

    stream = TableStream(data, **columns, **({} if buffer_rows is None else {"buffer_rows": buffer_rows}))
    detector = VAEAnomalyDetector(**params)
    for note in stream.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"training out of core on {data}: {stream.input_spec.n_features:,} features, buffer {stream.buffer_rows:,} rows", err=True)
    detector.fit_stream(stream)
    detector.save(out, metadata={"trained_on": str(data), "out_of_core": True}, inputs=[data])
    typer.echo(
        f"trained {detector.n_epochs_} epochs, threshold {detector.threshold_:.6g} ({describe_threshold_rule(detector.threshold_rule_)}); "
        f"wrote {out}"
    )


ENGINES = ("local", "dask", "spark")


def _check_engine(value: str) -> str:
    if value.lower() not in ENGINES:  # any case: DASK is dask
        _choice(value, ENGINES)
    return value.lower()


EngineOpt = Annotated[str, typer.Option(help="local (this process), dask or spark (Parquet in, a Parquet dataset folder out; needs the vaeguard[dask] or vaeguard[spark] extra).", callback=_check_engine)]


@app.command()
def score(
    model: Annotated[Path, typer.Argument(help="Model file written by `vaeguard train`.", dir_okay=False)],
    data: Annotated[Path, typer.Argument(help="A CSV file, Parquet (a file, a folder or a quoted glob such as 'data/*.parquet') or a folder of images.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Scores to write: a CSV file, a .parquet file, or with --engine dask/spark a folder (a Parquet dataset).")],
    heatmaps: Annotated[Optional[Path], typer.Option(help="Image models only: write per-pixel score maps as PNGs into this folder.", file_okay=False)] = None,
    on_bad_row: OnBadRowOpt = "fail",
    chunk_size: ChunkOpt = CHUNK_ROWS,
    engine: EngineOpt = "local",
    scheduler: Annotated[Optional[str], typer.Option(help="--engine dask: address of a running scheduler, e.g. tcp://10.0.0.5:8786 (default: a local cluster on 127.0.0.1).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="--engine dask without --scheduler: worker processes of the local cluster (default and most: one per core).", min=1, max=os.cpu_count())] = None,
    master: Annotated[str, typer.Option(help="--engine spark: the Spark master URL.")] = "local[*]",
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
) -> None:
    """Score every row of a table (CSV or Parquet) or every image of a folder, streaming.

    Table output: row, id column, score, p_value, is_anomaly, top_1..top_3 contributing columns,
    error. Image output: path, score, p_value, is_anomaly, error. Higher score = more anomalous.
    With --engine dask or spark the rows are scored on a cluster by the same function and
    written as a Parquet dataset folder (id column and score columns, no row number); the model
    file must be readable at the same path on every worker.

    Example: vaeguard score model.vgm new.csv -o scores.csv --on-bad-row skip
    """
    from .bulk import score_file
    from .scorer import Scorer
    from .sources import open_source
    from .threads import use_threads

    with _errors():
        _check_rows(chunk_size, "--chunk-size")
        if engine != "dask" and (scheduler is not None or workers is not None):
            raise typer.BadParameter("--scheduler and --workers go with --engine dask", param_hint="--scheduler")
        if engine != "spark" and master != "local[*]":
            raise typer.BadParameter("--master goes with --engine spark", param_hint="--master")
        if heatmaps is not None and engine != "local":
            raise typer.BadParameter(f"heatmaps are for image models; --engine {engine} scores Parquet tables", param_hint="--heatmaps")
        if engine != "local":
            _score_on_engine(engine, model, data, out, scheduler=scheduler, workers=workers, master=master, device=device, on_bad_row=on_bad_row)
            return
        _guard(out, data, model)
        if heatmaps is not None and data.is_dir() and heatmaps.resolve().is_relative_to(data.resolve()):
            raise typer.BadParameter("the heatmap folder must lie outside the image folder (its PNGs would be scored next time)", param_hint="--heatmaps")
        use_threads(threads)
        scorer = Scorer.load(model, device=device)  # not the estimator: no scikit-learn, 60 MB less
        source = open_source(data)
        source.check_model(scorer.input_spec)
        if heatmaps is not None and scorer.input_spec.image_shape is None:
            raise typer.BadParameter(f"heatmaps are for image models; {model} scores table rows", param_hint="--heatmaps")
        unit = source.unit
        with _progress(f"scoring {data.name}", unit) as advance:
            summary = score_file(
                scorer, source, out, chunk_size=chunk_size, on_bad_row=on_bad_row, heatmap_dir=heatmaps, progress=advance,
                protect=[model],
            )
        _print_summary(summary, unit)


def _score_on_engine(engine: str, model: Path, data: Path, out: Path, *, scheduler, workers, master, device, on_bad_row) -> None:
    from .atomic import check_output_folder
    from .parquet import is_parquet_input

    if not is_parquet_input(data):
        raise typer.BadParameter(f"--engine {engine} reads Parquet (a file, a folder or a glob); convert {data} first", param_hint="DATA")
    check_output_folder(out, [data, model])
    if engine == "dask":
        from .engines.dask import score_parquet_dask

        summary = score_parquet_dask(model, data, out, scheduler=scheduler, n_workers=workers, device=device, on_bad_row=on_bad_row)
    else:
        from .engines.spark import score_parquet_spark

        summary = score_parquet_spark(model, data, out, master=master, device=device, on_bad_row=on_bad_row)
    typer.echo(f"scored {summary.n_scored:,} rows, flagged {summary.n_anomalies:,} as anomalous, failed {summary.n_failed:,} (see the error column)")
    typer.echo(f"wrote {summary.output}")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model file written by `vaeguard train`.", dir_okay=False)],
    data: Annotated[Path, typer.Argument(help="Labelled data: a CSV file with a label column, or an image folder with one subfolder per class.")],
    out: ReportDirOpt = Path("evaluation"),
    label_column: LabelColumnOpt = None,
    normal_label: NormalLabelOpt = None,
    on_bad_row: OnBadRowOpt = "fail",
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
) -> None:
    """Score labelled data and write metrics.json and report.html (ROC, PR, score histograms).

    Example: vaeguard evaluate model.vgm test.csv --label-column is_fraud -o report/
    """
    from .estimator import load
    from .evaluation import evaluate_data

    with _errors():
        _guard_report(out, data, model)
        detector = load(model, device=device).set_params(threads=threads or "auto")
        metrics = evaluate_data(detector, data, out, label_column=label_column, normal_label=normal_label, on_bad_row=on_bad_row)
    typer.echo(
        f"AUROC {metrics['auroc']:.4f} (95% CI {metrics['auroc_ci_low']:.4f}-{metrics['auroc_ci_high']:.4f})  "
        f"AUPRC {metrics['auprc']:.4f}  FPR@95%TPR {metrics['fpr_at_95_tpr']:.4f}"
    )
    typer.echo(
        f"at the threshold: precision {metrics['precision']:.4f}  recall {metrics['recall']:.4f}  "
        f"F1 {metrics['f1']:.4f}  FPR {metrics['fpr']:.4f}"
    )
    if metrics.get("n_failed"):
        typer.echo(f"failed {metrics['n_failed']} row(s) or file(s), not counted", err=True)
    typer.echo(f"report: {out / 'report.html'}")


@app.command()
def calibrate(
    model: Annotated[Path, typer.Argument(help="Model file to re-threshold.", dir_okay=False)],
    data: Annotated[Path, typer.Argument(help="New data: normal only, or labelled with --label-column.")],
    fpr: FprOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write the model (default: replace MODEL).", dir_okay=False)] = None,
    label_column: LabelColumnOpt = None,
    normal_label: NormalLabelOpt = None,
    rule: Annotated[str, typer.Option(help="With labels: f1, youden or recall.", callback=_check_rule)] = "f1",
    recall: Annotated[Optional[float], typer.Option(help="With --rule recall: the recall to reach.", min=0.0, max=1.0)] = None,
    on_bad_row: OnBadRowOpt = "fail",
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
) -> None:
    """Set a new threshold without retraining and write the model file.

    Without labels, DATA is normal data: its scores become the calibration scores and the
    threshold is the conformal quantile at --fpr (a table holding the label column stored by
    `train --label-column`: its rows labelled normal). With --label-column (or labelled image
    subfolders) the threshold maximises F1 or Youden's J, or reaches --recall.

    Example: vaeguard calibrate model.vgm recent-normal.csv --fpr 0.001
    """
    from .bulk import calibrate_file
    from .calibration import describe_threshold_rule
    from .estimator import load

    if rule == "recall" and recall is None:
        raise typer.BadParameter("--rule recall needs --recall, the recall to reach (e.g. 0.95)", param_hint="--recall")
    if recall is not None and rule != "recall":
        raise typer.BadParameter("--recall goes with --rule recall", param_hint="--recall")
    with _errors():
        _guard(out or model, data)  # writing over MODEL is what calibrate does by default
        detector = load(model, device=device).set_params(threads=threads or "auto")
        before = detector.threshold_
        if fpr is not None and (label_column is not None or normal_label is not None):
            raise typer.BadParameter("--fpr sets the threshold from normal data; labelled data uses --rule", param_hint="--fpr")
        notes = calibrate_file(
            detector, data, fpr=fpr, label_column=label_column, normal_label=normal_label, rule=rule, recall=recall, on_bad_row=on_bad_row
        )
        detector.save(out or model, inputs=[data])
    for note in notes:
        typer.echo(f"note: {note}")
    typer.echo(
        f"threshold {before:.6g} -> {detector.threshold_:.6g} ({describe_threshold_rule(detector.threshold_rule_)}); "
        f"wrote {out or model}"
    )


@app.command()
def info(
    model: Annotated[Path, typer.Argument(help="Model file.", dir_okay=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the model's full JSON description.")] = False,
) -> None:
    """Show a model's architecture, input schema, threshold and training history.

    Example: vaeguard info model.vgm
    """
    from .calibration import describe_threshold_rule
    from .modelfile import FittedState, read_model_file

    with _errors():
        if as_json:
            typer.echo(json.dumps(read_model_file(model)[0], indent=2))
            return
        state = FittedState.load(model)
    cfg, params, history = state.model_config, state.params, state.history
    typer.echo(f"model        {model}")
    typer.echo(
        f"architecture {cfg.get('architecture')}  input {cfg.get('input_dim')}  hidden {list(cfg.get('hidden_dims', []))}  "
        f"latent {cfg.get('latent_dim')}  likelihood {state.likelihood}"
    )
    typer.echo(f"input        {state.input.describe()}")
    if state.input.kind == "table":
        for line in state.input.schema_rows(state.mean if state.standardizes else None, state.scale):
            typer.echo(f"  {line}")
    for role in ("id_column", "label_column"):
        if getattr(state.input, role, None):
            typer.echo(f"{role.replace('_', ' '):<12} {getattr(state.input, role)}")
    typer.echo(f"preprocess   standardize={state.standardizes}")
    parts = [text for key, text in (("code_length", "less each image's code length"),
                                    ("pixel_range", "plus log(n + 1) nats per pixel outside its training range")) if state.score_config.get(key)]
    corrected = f" (reconstruction NLL {', '.join(parts)})" if parts else ""
    typer.echo(f"score        {state.score_type}{corrected}")
    rule = describe_threshold_rule(state.threshold_rule)
    typer.echo(f"threshold    {state.threshold:.6g}: {rule}; {len(state.calibration_scores)} calibration scores stored")
    n = len(history.get("train_loss", []))
    typer.echo(f"training     {n} epochs, {sum(history.get('epoch_seconds', [])):.1f} s, batch {params.get('batch_size')}, lr {params.get('learning_rate')}, beta {params.get('beta')}")
    typer.echo(f"{'epoch':>7} {'train -ELBO':>12} {'val -ELBO':>10} {'val recon':>10} {'val KL':>8}")
    for i in sorted({0, *range(max(0, n - 5), n)} if n else []):
        val = [history[k][i] if i < len(history.get(k, [])) else float("nan") for k in ("val_loss", "val_recon", "val_kl")]
        typer.echo(f"{i + 1:>7} {history['train_loss'][i]:>12.4f} {val[0]:>10.4f} {val[1]:>10.4f} {val[2]:>8.4f}")
    typer.echo("versions     " + "  ".join(f"{k} {v}" for k, v in state.versions.items()))


def _run_digit_job(load_data: Callable, normal: list[int], out: Path, params: dict, save_model: Optional[Path], latent_map: str) -> None:
    from .digits import run_heldout_digits
    from .estimator import VAEAnomalyDetector
    from .plots import _require_umap

    if latent_map == "umap":
        _require_umap()
    detector = VAEAnomalyDetector(**params)
    metrics = run_heldout_digits(load_data(), normal, detector, out, latent_method=latent_map)
    if save_model is not None:
        detector.save(save_model)
    _print_auroc_table(metrics, "digit")
    typer.echo(f"report: {out / 'report.html'}")


def _check_normal_digits(text: str) -> list[int]:
    from .mnist import parse_digits

    digits = _usage_error(parse_digits, text)
    if len(digits) == 10:
        raise typer.BadParameter("every digit is normal: leave at least one out")
    return digits


def _check_latent_map(value: str) -> str:
    from .plots import LATENT_MAPS

    return _choice(value, LATENT_MAPS)


NormalOpt = Annotated[str, typer.Option(help="Digits treated as normal, e.g. 0-8, 3 (one-class) or 1,3,7.", callback=_check_normal_digits)]
SaveModelOpt = Annotated[Optional[Path], typer.Option(help="Also save the trained model file here.", dir_okay=False)]
LatentMapOpt = Annotated[str, typer.Option(help="How the report maps the latent means to 2-D: pca, tsne (slower), or umap (needs the optional extra: pip install 'vaeguard[umap]').", callback=_check_latent_map)]


@app.command()
def mnist(
    normal: NormalOpt = "0-8",
    out: ReportDirOpt = Path("mnist-report"),
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder with the four MNIST IDX files (default: $VAEGUARD_MNIST_DIR, else a user cache, downloading once).", file_okay=False)] = None,
    download: Annotated[bool, typer.Option(help="Download MNIST into the cache when it is missing.")] = True,
    config: ConfigOpt = None,
    epochs: EpochsOpt = None,
    seed: SeedOpt = None,
    save_model: SaveModelOpt = None,
    latent_map: LatentMapOpt = "pca",
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """The reference job: fit on normal MNIST digits, flag the held-out ones, write a report.

    Example: vaeguard mnist --normal 0-8 --data-dir ../shared/data/mnist -o mnist-report
    """
    from .digits import mnist_digits

    with _errors():
        params, _ = _detector_params(config, epochs=epochs, random_state=seed, device=device, threads=threads)
        _run_digit_job(lambda: mnist_digits(data_dir, download=download), normal, out, params, save_model, latent_map)


@app.command()
def digits(
    normal: NormalOpt = "0-4",
    out: ReportDirOpt = Path("digits-report"),
    config: ConfigOpt = None,
    epochs: EpochsOpt = None,
    seed: SeedOpt = None,
    save_model: SaveModelOpt = None,
    latent_map: LatentMapOpt = "pca",
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Offline demo: fit on scikit-learn's embedded 8x8 digits, flag the held-out ones, write a report.

    Runs in seconds with no download. Example: vaeguard digits --normal 0-4 -o digits-report
    """
    from .digits import embedded_digits

    with _errors():
        params, _ = _detector_params(config, epochs=epochs, random_state=seed, device=device, threads=threads)
        params.setdefault("epochs", 100)
        params.setdefault("fpr", 0.05)  # ~90 calibration images: 1% would need at least 99
        _run_digit_job(lambda: embedded_digits(random_state=params["random_state"]), normal, out, params, save_model, latent_map)


def _check_gallery_out(command: str, out: Path, detector) -> None:
    """A usage error unless `out` ends in a suffix that `command` writes for this model."""
    from .gallery import OutputNameError, check_output_name

    try:
        check_output_name(command, out, detector)
    except OutputNameError as exc:
        raise typer.BadParameter(str(exc), param_hint="--out") from None


@app.command()
def sample(
    model: Annotated[Path, typer.Argument(help="Model file written by `vaeguard train` (or a digit job's --save-model).", dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Image models: a PNG grid (*.png). Table models: a CSV of generated rows (*.csv or *.csv.gz) with the original column names, in the original units.", dir_okay=False)],
    n: Annotated[int, typer.Option("--n", help="How many samples.", min=1, max=MAX_SAMPLES)] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Random seed, a 32-bit unsigned integer: the same seed gives the same samples.", callback=_detector_option("random_state"))] = 0,
    draw: Annotated[bool, typer.Option("--draw/--mean", help="--mean (default): the decoder mean E[x|z], smooth; --draw: one draw from the likelihood p(x|z): Bernoulli pixels are 0 or 1, table rows get the learned per-feature noise and so the data's full spread.")] = False,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
) -> None:
    """Draw new samples from a model's prior: a PNG grid of images, or a CSV of table rows.

    Blurry or all-alike samples warn that the model has not learned the normal data.

    Example: vaeguard sample model.vgm -o grid.png --n 64 --seed 1
    """
    from .estimator import load
    from .gallery import write_samples

    with _errors():
        _guard(out, model)
        detector = load(model, device=device).set_params(threads=threads or "auto")
        _check_gallery_out("sample", out, detector)
        written = write_samples(detector, out, n, seed=seed, mean=not draw)
    typer.echo(f"wrote {n} samples to {written}")


def _check_method(value: str) -> str:
    from .generative import INTERPOLATIONS

    return _choice(value, INTERPOLATIONS)


@app.command()
def interpolate(
    model: Annotated[Path, typer.Argument(help="Model file written by `vaeguard train`.", dir_okay=False)],
    a: Annotated[str, typer.Argument(help="Start: an image file (image models), or a row of --data: its id (when the model has an id column) or its 1-based row number.")],
    b: Annotated[str, typer.Argument(help="End: like A.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Image models: a PNG strip (*.png). Table models: a CSV of the interpolated rows (*.csv).", dir_okay=False)],
    data: Annotated[Optional[Path], typer.Option("--data", help="Table models: the CSV file holding rows A and B.", dir_okay=False)] = None,
    steps: Annotated[int, typer.Option("--steps", help="Points on the path, both ends included.", min=2, max=MAX_INTERPOLATION_STEPS)] = 10,
    method: Annotated[str, typer.Option("--method", help="slerp (spherical, keeps a typical prior norm) or linear.", callback=_check_method)] = "slerp",
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
) -> None:
    """Decode the path in latent space from A to B: a PNG strip for images, a CSV for tables.

    Examples: vaeguard interpolate model.vgm a.png b.png -o strip.png
              vaeguard interpolate model.vgm 12 40 --data rows.csv -o path.csv
    """
    from .estimator import load
    from .gallery import image_shape_of, table_rows_by_id, write_interpolation
    from .images import load_image

    with _errors():
        _guard(out, model, data, *(Path(p) for p in (a, b) if Path(p).exists()))
        detector = load(model, device=device).set_params(threads=threads or "auto")
        _check_gallery_out("interpolate", out, detector)
        shape = image_shape_of(detector)
        if shape is not None:
            if data is not None:
                raise typer.BadParameter("image models take two image files as A and B, not --data", param_hint="--data")
            x_a, x_b = (load_image(Path(p), shape) for p in (a, b))
        else:
            if data is None:
                raise typer.BadParameter("a table model needs --data FILE holding rows A and B", param_hint="--data")
            x_a, x_b = table_rows_by_id(detector, data, [a, b])
        written = write_interpolation(detector, x_a, x_b, out, steps=steps, method=method, labels=(Path(a).name, Path(b).name))
    typer.echo(f"wrote {steps} steps from {a} to {b} to {written}")


def _interrupted(signum, frame) -> None:
    """Ctrl-C in the console command: one line and exit 130 (temporary files are cleaned up on the way)."""
    typer.secho("interrupted: no partial output was written", err=True, fg=typer.colors.RED)
    raise SystemExit(130)


def main() -> None:
    """The console entry point. Ctrl-C becomes one line and exit 130 instead of click's 'Aborted!'
    (or a traceback while the libraries load); SystemExit still unwinds every atomic write."""
    import signal

    signal.signal(signal.SIGINT, _interrupted)
    app(prog_name="vaeguard")


if __name__ == "__main__":
    main()
