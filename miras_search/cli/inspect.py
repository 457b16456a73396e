"""Commands that read files and print: schema, validate, show, kernels, presets, sample."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from miras_search.cli.app import command, console, errors, print_text
from miras_search.cli.checks import output_folder
from miras_search.errors import MirasError
from miras_search.schema.train import SEED_MAX

if TYPE_CHECKING:
    from miras_search.schema import ModelPoint
    from miras_search.space import SearchSpace

# The rest is imported where used: `miras --help` must not import Optuna or torch.

SHOW_GPU_POINTS = 200
"""Points `miras show SPACE` draws for its GPU-kernel share (`miras kernels` takes --points)."""


def _names_a_preset(file: Path) -> bool:
    """Whether the argument is a preset's name (or a mistyped one) rather than a file to read."""
    return not (file.exists() or file.is_symlink()) and file.suffix not in (".yaml", ".yml")


def _schemas() -> dict[str, dict]:
    from miras_search.presets import preset_names
    from miras_search.schema import ModelPoint
    from miras_search.space.spec import SpaceFile

    point = ModelPoint.model_json_schema()
    point["properties"]["preset"] = {"type": "string", "enum": preset_names()}
    point["properties"]["type"] = {"const": "point"}
    point["properties"]["meta"] = {"type": "object"}
    schemas = {"point": point, "space": SpaceFile.model_json_schema()}
    try:
        from miras_search.study.spec import StudyFile
    except ImportError:
        pass
    else:
        schemas["study"] = StudyFile.model_json_schema()
    return schemas


@command("schema")
def schema(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the *.schema.json files.")] = Path(
        "schemas"
    ),
) -> None:
    """Write the JSON Schema of the point, space and study YAML formats (for editor completion)."""
    output_folder("--out", out)
    for kind, body in _schemas().items():
        path = out / f"{kind}.schema.json"
        path.write_text(json.dumps(body, indent=2) + "\n")
        console.print(f"wrote {escape(str(path))}", highlight=False)


@command("validate")
def validate(files: Annotated[list[Path], typer.Argument(help="Point, space or study files.")]) -> None:
    """Check files against the schemas (spaces, and studies' spaces, are also sampled once, and
    studies' samplers built); exit 1 if any is invalid. A space that draws a field some of its
    points leave unused (a gate's value under mode 'mamba') gets a warning."""
    from miras_search.cli.files import load_all
    from miras_search.schema import ModelPoint
    from miras_search.space import SearchSpace

    failed = 0
    for path in files:
        try:
            documents = load_all(path)
            for index, (kind, loaded) in enumerate(documents, 1):
                if isinstance(loaded, SearchSpace):
                    loaded.sample(1, seed=0)
                    _warn_unused_draws(path, loaded)
                elif kind == "study":  # what `run` does first: sample its space, build its sampler
                    _warn_unused_draws(path, _check_study(loaded))
                elif isinstance(loaded, ModelPoint):
                    _check_point_memory(loaded, path if len(documents) == 1 else f"{path} (document {index})")
        except MirasError as error:
            failed += 1
            errors.print(f"[red]✗[/] {escape(str(error))}", highlight=False, soft_wrap=True)
            continue
        console.print(f"[green]✓[/] {escape(str(path))} ({_kinds(documents)})", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _kinds(documents: list[tuple[str, object]]) -> str:
    """'point' for one document, '3 points' for several of one kind, else '3 documents'."""
    kinds = {kind for kind, _ in documents}
    if len(documents) == 1:
        return documents[0][0]
    return f"{len(documents)} {kinds.pop()}s" if len(kinds) == 1 else f"{len(documents)} documents"


def _warn_unused_draws(path: Path, space: SearchSpace) -> None:
    """A warning per field the space draws where its point does not use it (a noise dimension)."""
    for note in space.unused_draws():
        errors.print(f"[yellow]warning:[/] {escape(str(path))}: {escape(note)}", highlight=False, soft_wrap=True)


def _check_study(study) -> SearchSpace:
    """ConfigError when the study's space has no valid point, its sampler cannot be built, its
    points cannot fit a trial's memory or its data cannot give a batch (study.preflight)."""
    from miras_search.study.preflight import preflight  # the study layer sits above this one
    from miras_search.study.samplers import make_sampler

    space = study.load_space()
    space.sample(1, seed=0)
    make_sampler(study, space)
    preflight(study, space)
    return space


def _check_point_memory(point: ModelPoint, path: Path | str) -> None:
    from miras_search.trial.memory_limit import memory_problem

    problem = memory_problem(point)
    if problem is not None:
        raise MirasError(f"{path}: {problem}")


def _describe(node: object) -> str:
    from miras_search.space import FloatRange, IntRange

    if isinstance(node, IntRange):
        low, high = node.int
        return f"int [{low}, {high}]" + (" log" if node.log else f" step {node.step}" * (node.step != 1))
    if isinstance(node, FloatRange):
        low, high = node.float
        return f"float [{low}, {high}]" + (" log" if node.log else "") + (
            f" step {node.step}" if node.step else ""
        )
    return repr(node)


def _add_tree(tree: Tree, params: dict) -> None:
    from miras_search.space import Choice

    for key, node in params.items():
        if key == "one_of":
            branch = tree.add("[magenta]one of[/]")
            for label, sub in node.items():
                _add_tree(branch.add(f"[magenta]{escape(str(label))}[/]"), sub or {})
        elif isinstance(node, Choice):
            options = ", ".join(escape(str(o)) for o in node.options)
            branch = tree.add(f"[cyan]{escape(str(key))}[/]: choice of {options}")
            for option in node.options:
                sub = node.branch(option)
                if sub:
                    _add_tree(branch.add(f"when [yellow]{escape(str(option))}[/]"), sub)
        elif isinstance(node, dict):
            _add_tree(tree.add(f"[bold]{escape(str(key))}[/]"), node)
        else:
            tree.add(f"{escape(str(key))}: {escape(_describe(node))}")


@command("show")
def show(file: Annotated[Path, typer.Argument(help="A point, space or study file, or a preset name.")]) -> None:
    """A readable tree of a space (size, conditional branches, presets), or a point's axes."""
    from miras_search.cli.files import load_any
    from miras_search.points import load_point, point_to_yaml
    from miras_search.presets import preset, preset_names
    from miras_search.schema import ModelPoint
    from miras_search.space import SearchSpace
    from miras_search.yamlio import dump_yaml

    # a preset name (or an error suggesting the nearest one), else the file
    loaded = load_point(str(file)) if _names_a_preset(file) else load_any(file)[1]
    if isinstance(loaded, SearchSpace):
        summary = loaded.summary()
        tree = Tree(f"[bold]space {escape(loaded.name)}[/]  {escape(loaded.spec.description)}")
        if loaded.spec.preset:
            tree.add(f"base preset: [green]{escape(loaded.spec.preset)}[/]")
        _add_tree(tree.add("params"), loaded.spec.params)
        for index, constraint in enumerate(loaded.spec.constraints, 1):
            tree.add(f"constraint {index}: {escape(constraint.describe())}")
        console.print(tree)
        size = "infinite (continuous ranges)" if summary.discrete_size is None else f"{summary.discrete_size:,}"
        console.print(
            f"searched parameters: {summary.parameters}  conditional: {summary.conditional}  "
            f"branches: {summary.branches}  size: {size}"
        )
        contained = [n for n in preset_names() if loaded.encode(preset(n), axes_only=True) is not None]
        console.print(f"anchors: {', '.join(loaded.spec.anchors) or '-'}", highlight=False, markup=False)
        console.print(f"presets whose four axes lie in this space: {', '.join(contained) or '-'}")
        from miras_search.model.gpu_path import coverage

        try:
            found = coverage(loaded.sample(SHOW_GPU_POINTS, seed=0))
        except MirasError:  # too few valid points to draw: `miras validate` says why
            console.print("on a CUDA GPU: not estimated (the space gives too few valid points)")
        else:
            console.print(f"on a CUDA GPU: {found.on_kernel} of {found.memory_points} memory points train on "
                          f"a kernel ({SHOW_GPU_POINTS} drawn; `miras kernels {shlex.quote(str(file))}`: the paths and why "
                          "the rest runs PyTorch)", highlight=False, markup=False)
    elif isinstance(loaded, ModelPoint):
        print_text(point_to_yaml(loaded))
    else:
        print_text(dump_yaml(loaded.model_dump(mode="json")))


@command("kernels")
def kernels(
    file: Annotated[Path, typer.Argument(help="A point, space or study file, or a preset name.")],
    points: Annotated[int, typer.Option("--points", min=1, max=100_000,
                                        help="Points drawn from a space or study's space.")] = 400,
    seed: Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX, help="Random seed of the draw.")] = 0,
) -> None:
    """Which path the memory layers would take on a CUDA GPU (bf16, the gpu extra installed):
    fla's chunk kernels, our Triton kernels, or the PyTorch chunked form and why. Decided on any
    machine, before a study runs; a space or study is sampled (a study's trial settings applied)."""
    from miras_search.cli.files import load_all
    from miras_search.model.gpu_path import coverage, gpu_path
    from miras_search.points import load_point
    from miras_search.schema import ModelPoint
    from miras_search.space import SearchSpace

    if _names_a_preset(file):
        documents = [load_point(str(file))]
    else:  # a file of several points (`miras best`, `miras sample`) gives a line each
        documents = [loaded for _, loaded in load_all(file)]
    if all(isinstance(document, ModelPoint) for document in documents):
        for index, point in enumerate(documents, 1):
            name = point.name or (str(file) if len(documents) == 1 else f"{file} (document {index})")
            console.print(f"{escape(name)}: {escape(gpu_path(point).label())}", highlight=False)
        return
    if len(documents) > 1:
        raise MirasError(f"{file} holds {len(documents)} documents: give one space or study, or points only")
    loaded = documents[0]
    if isinstance(loaded, SearchSpace):
        drawn, unfit = loaded.sample(points, seed=seed), 0
    else:  # a study: its space's points under the study's trial settings, as its trials train them
        drawn, unfit = loaded.sample_trial_points(points, seed)
    found = coverage(drawn)
    share = 100 * found.on_kernel / max(found.memory_points, 1)
    skipped = f", {unfit} not trainable within the study's trial budget" if unfit else ""
    table = Table()
    table.add_column("path on a CUDA GPU (bf16)")
    table.add_column("points", justify="right")
    for group, count in found.counts.most_common():
        style = {"fla": "green", "triton": "green", "attention": "dim", "refused": "red"}.get(found.kinds[group])
        table.add_row(escape(group), str(count), style=style)
    console.print(table)
    console.print(f"{file}: {found.on_kernel} of {found.memory_points} memory points on a GPU kernel "
                  f"({share:.0f} %), {points} drawn (seed {seed}){skipped}", highlight=False, markup=False,
                  soft_wrap=True)


@command("presets")
def presets() -> None:
    """The known models and their four axes (the paper's Table 1 and Moneta / Yaad / Memora)."""
    from miras_search.model.gpu_path import gpu_path
    from miras_search.presets import NAMED_MODELS, preset, preset_names
    from miras_search.schema import AXES

    # No vertical rules and short headers: the feature-mapped Atlas memories' labels are long, and
    # the table should still read at 80 columns.
    table = Table(title="Known points of the Miras design space", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  padding=(0, 1, 0, 0))
    narrow = console.width < 100  # wrap the short axis columns first, so the memory labels get the room
    for column in ("preset", "memory", "bias", "retention", "algorithm", "GPU"):
        table.add_column(column, no_wrap=column in ("preset", "GPU"),
                         max_width=9 if narrow and column in ("bias", "retention", "algorithm") else None,
                         min_width={"memory": 15, "GPU": 9}.get(column) if narrow else None)
    for name in preset_names():
        point = preset(name)
        style = "bold green" if name in NAMED_MODELS else None
        table.add_row(name, *(getattr(point, axis).label() for axis in AXES), gpu_path(point).short(),
                      style=style)
    console.print(table)
    console.print("GPU: the memory layers' path on a CUDA GPU (bf16 autocast, the gpu extra); "
                  "`miras kernels NAME` names fla's op or why PyTorch runs", highlight=False, markup=False)


@command("options")
def options(
    markdown: Annotated[bool, typer.Option("--markdown", help="The README's markdown table.")] = False,
) -> None:
    """The options of the four axes and of Atlas's feature maps, as registered (every kind a point
    may name; options from your own modules too: MIRAS_PLUGINS)."""
    from miras_search.schema.options import axis_options, options_markdown

    if markdown:
        print_text(options_markdown())
        return
    table = Table(title="The axes of the Miras design space (and Atlas's feature maps)")
    for column in ("axis", "what it is", "kind", "notes"):
        table.add_column(column)
    for title, role, kinds in axis_options():
        for i, (kind, summary) in enumerate(kinds):
            table.add_row(title if i == 0 else "", role if i == 0 else "", kind, summary,
                          end_section=i == len(kinds) - 1)
    console.print(table)


SAMPLE_MAX = 100_000
"""Most points `miras sample` prints: more than a study ever draws (minutes of sampling)."""


@command("sample")
def sample(
    file: Annotated[Path, typer.Argument(help="A space file.")],
    n: Annotated[int, typer.Option("-n", min=1, max=SAMPLE_MAX, help="Number of points (at most 100,000).")] = 5,
    seed: Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX, help="Random seed.")] = 0,
    full: Annotated[bool, typer.Option("--full", help="Every field, not only non-defaults.")] = False,
) -> None:
    """Print N random valid points of a space as YAML documents."""
    from miras_search.cli.files import load_any
    from miras_search.points import point_to_yaml
    from miras_search.space import SearchSpace

    kind, loaded = load_any(file)
    if not isinstance(loaded, SearchSpace):
        raise MirasError(f"{file} is a {kind} file, not a space; 'miras sample' needs a space file")
    # each point printed as it is drawn: `| head` answers at once, and a long run shows progress
    for index, point in enumerate(loaded.iter_sample(n, seed=seed)):
        print_text(("---\n" if index else "") + point_to_yaml(point, compact=not full))
        if console.pipe_closed:  # the reader stopped (`| head -3`): what it wanted was printed
            raise typer.Exit(0)
