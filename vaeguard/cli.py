"""The vaeguard command line. Every command is a thin shell around library functions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import VaeguardError

app = typer.Typer(
    name="vaeguard",
    help="Likelihood-based anomaly detection with variational autoencoders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=1)


def _print_auroc_table(metrics: dict, label: str) -> None:
    typer.echo(f"{label:>10}  AUROC")
    for group, auroc in metrics["per_group"].items():
        typer.echo(f"{group:>10}  {auroc:.4f}")
    typer.echo(
        f"{'overall':>10}  {metrics['auroc']:.4f}  "
        f"(95% CI {metrics['auroc_ci_low']:.4f}-{metrics['auroc_ci_high']:.4f})"
    )


@app.command()
def digits(
    normal: Annotated[str, typer.Option(help="Digits treated as normal, e.g. '0-4' or '1,3,7'.")] = "0-4",
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")] = Path("digits-report"),
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Fit on scikit-learn's embedded 8x8 digits, flag the held-out digits, write a report.

    Runs offline in seconds. Example: vaeguard digits --normal 0-4 -o digits-report
    """
    from .estimator import VAEAnomalyDetector
    from .jobs import embedded_digits, run_heldout_digits
    from .mnist import parse_digits

    try:
        normal_digits = parse_digits(normal)
        detector = VAEAnomalyDetector(epochs=epochs, random_state=seed)
        metrics = run_heldout_digits(embedded_digits(random_state=seed), normal_digits, detector, out)
    except (VaeguardError, ValueError) as exc:
        _fail(str(exc))
    _print_auroc_table(metrics, "held out")
    typer.echo(f"report: {out / 'report.html'}")


def main() -> None:
    app(prog_name="vaeguard")


if __name__ == "__main__":
    sys.exit(main())
