"""Commands around the pipeline: ``generators`` (what is available), ``geometry`` (a generator's latent geometry),
``train`` (the embedded default), ``bench``."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import click

from hvp_explore.cli._common import (
    UserError,
    check_output,
    command_line,
    finish,
    json_flag,
    json_requested,
    output_options,
    print_json,
    print_table,
    result_line,
    run_flags,
    settings_options,
    setup,
    write_folder,
)
from hvp_explore.settings import TRAIN_KINDS, GeometrySettings, RunSettings, TrainSettings


@click.command("generators")
@json_flag
def generators_cmd():
    """List the registered generators, the other forms --generator takes (with an example each), and the metrics."""
    from hvp_explore.generators import GENERATOR_EXAMPLES, GENERATOR_FORMS, available_generators
    from hvp_explore.io.tables import summary_table
    from hvp_explore.metrics import available_metrics

    rows = [{"name": k, "description": v, "example": f"--generator {k}"} for k, v in available_generators().items()]
    rows += [{"name": k, "description": v, "example": GENERATOR_EXAMPLES[k]} for k, v in GENERATOR_FORMS.items()]
    if json_requested():
        print_json({"generators": rows[:len(available_generators())], "forms": rows[len(available_generators()):],
                    "metrics": list(available_metrics())})
        return
    print_table(summary_table(rows, {"name": "generator", "description": "description", "example": "example"}))
    result_line("A stage folder (eig, project, render) that names a file or a factory loads it only with --generator "
                "repeating it, or --trust-generator: such generators run code.")
    result_line("metrics: " + ", ".join(available_metrics()))


@click.command()
@settings_options(RunSettings)
@settings_options(GeometrySettings)
@output_options
def geometry(generator, device, seed, out, overwrite, quiet, **options):
    """The latent geometry of a generator (Wang & Ponce): its perceptual metric at many latents, how anisotropic and
    how consistent it is, and the average metric's top axes as image strips."""
    settings = GeometrySettings.pick(options)
    RunSettings(generator=generator, device=device, seed=seed)
    check_output(out, overwrite)
    setup(quiet, seed, device)
    from hvp_explore.exploration import Explorer
    from hvp_explore.geometry import latent_geometry
    from hvp_explore.io.stages import write_geometry

    explorer = Explorer(generator, settings.metric, device=device)
    if not 1 <= settings.k < explorer.latent_dim:
        raise UserError(f"--k must be between 1 and n - 1 = {explorer.latent_dim - 1} (the latent dimension is "
                        f"{explorer.latent_dim}), got {settings.k}")
    result = latent_geometry(explorer.generator, explorer.metric, latents=settings.latents, k=settings.k, axes=settings.axes,
                             strip_latents=settings.strip_latents, strip_steps=settings.strip_steps, span=settings.span,
                             tol=settings.tol, seed=seed, quiet=quiet)
    report = write_folder(out, overwrite, lambda tmp: write_geometry(tmp, result, generator=explorer.generator_name,
                                                                     metric=explorer.metric_name, command=command_line(),
                                                                     seed=seed))
    finish(quiet, out, f"latent geometry of {explorer.generator_name} ({explorer.metric_name})",
           [{key: report[key] for key in ("latents", "k", "n", "median_ratio", "median_effective_dim", "mean_overlap",
                                           "random_overlap", "mean_alignment", "matvecs")} | {"seconds": report["timings"]["total"]}],
           ["latents", "k", "n", "median_ratio", "median_effective_dim", "mean_overlap", "random_overlap", "mean_alignment",
            "matvecs", "seconds"], report=report)


@click.command()
@click.argument("kind", type=click.Choice(list(TRAIN_KINDS)))
@settings_options(TrainSettings)
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Weights file to write (.pt).")
@click.option("--quiet", is_flag=True, help="No progress (bars on a terminal, timestamped lines in a log), messages or "
                                            "summary table; errors and --json still print.")
@run_flags
def train(kind, epochs, seed, out, quiet):
    """Train the embedded default: the Fashion-MNIST DCGAN or the perceptual-trunk classifier."""
    TrainSettings(epochs=epochs, seed=seed)
    RunSettings(seed=seed)
    if out.suffix != ".pt":
        raise UserError(f"--out must be a .pt weights file, got {out}")
    from hvp_explore.io.atomic import check_output_file

    check_output_file(out, "weights file")  # before the training, not after it
    setup(quiet, seed)
    from hvp_explore.training import save_trained
    from hvp_explore.training import train as run_train

    result = run_train(kind, epochs=epochs, seed=seed, quiet=quiet)
    record = save_trained(result, out, kind=kind, command=command_line())
    finish(quiet, out.parent, f"training ({kind})", [{"epochs": record["epochs"], "seconds": record["seconds"],
                                                      "sha256": record["sha256"][:16]}], ["epochs", "seconds", "sha256"],
           report={"weights": str(out), **record})


@click.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(name, args):
    """Run benchmarks/NAME.py of a source checkout with ARGS (results under benchmarks/results/ and docs/)."""
    script = Path.cwd() / "benchmarks" / f"{name}.py"
    if not script.is_file() or name.startswith("_"):
        found = sorted(p.stem for p in (Path.cwd() / "benchmarks").glob("[!_]*.py"))
        raise UserError(f"no benchmark {name!r} in {Path.cwd() / 'benchmarks'}: run this from a source checkout of hvp-explore"
                        + (f" (benchmarks: {', '.join(found)})" if found else ""))
    sys.argv = [str(script), *args]
    runpy.run_path(str(script), run_name="__main__")
