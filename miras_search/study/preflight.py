"""Checks a study passes before its first trial (and in ``miras validate``): problems every trial
would hit are found once, before the trial budget is spent on them.

- data: every source opens (files decodable as text, parquet readable, not empty) and gives a
  training and a validation batch at the trial's batch size and sequence length;
- memory: the space's points (a sample and the anchors) are not absurdly large for a trial
  (``trial.memory_limit.memory_problem``; a run holds each trial to this machine's limit).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from miras_search.data import DataMix
from miras_search.data.cache import cache_problem, is_cache_path
from miras_search.data.files import SUFFIXES, resolve_files
from miras_search.data.spec import open_source
from miras_search.data.text_sources import Files
from miras_search.errors import MirasError
from miras_search.merge import get_path
from miras_search.presets import preset
from miras_search.schema import AXES, ModelPoint
from miras_search.space import SearchSpace
from miras_search.space.reach import number_bounds
from miras_search.space.targets import iter_leaves
from miras_search.study.spec import StudyFile, anchor_points
from miras_search.trial.memory_limit import memory_problem
from miras_search.yamlio import LineMap, ancestor_line, read_yaml

BINARY_SHARE = 0.05
"""A text data file with more than this share of bytes that are not UTF-8 is taken for binary."""
_SNIFF = 1 << 20
"""Bytes of each text file read to judge its encoding."""


def _binary_files(spec: Files) -> list[str]:
    """The .txt / .jsonl files of ``spec`` whose first MiB is mostly not UTF-8 (binary)."""
    found = []
    for path in resolve_files(spec.file_paths()):
        if path.suffix not in SUFFIXES or path.suffix == ".parquet":
            continue
        with open(path, "rb") as file:
            head = file.read(_SNIFF)
        if not head:
            continue
        text = head.decode("utf-8", "surrogateescape")
        invalid = sum(0xDC80 <= ord(c) <= 0xDCFF for c in text)
        if invalid > BINARY_SHARE * len(head) + 3:  # +3: a multi-byte sequence cut by the sniff
            found.append(f"'{path}' is not UTF-8 text ({invalid} of its first {len(head)} bytes are "
                         "not valid UTF-8: a binary file?)")
    return found


def _first_line(error: BaseException) -> str:
    """The error's first line; the exception's class only where its message is not our own
    readable one (a MirasError's text says everything)."""
    lines = str(error).strip().splitlines()
    if lines and isinstance(error, MirasError):
        return lines[0]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def data_problems(study: StudyFile, point: ModelPoint, root: str | Path | None = None) -> list[str]:
    """Why a source of the study's data cannot feed ``point``'s trials (one line each), or []."""
    problems = []
    train = point.train
    for index, spec in enumerate(study.trial.data):
        where = f"trial.data.{index} ({spec.task})"
        try:
            if isinstance(spec, Files):
                binary = _binary_files(spec)
                if binary:
                    problems.append(f"{where}: {'; '.join(binary)}")
                    continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a few invalid bytes are read as U+FFFD (warned in trials)
                source = open_source(spec, root)
                for split in ("train", "validation"):
                    batch = source.batch(train.batch_size, step=0, seed=train.seed, split=split,
                                         seq_len=train.seq_len)
                    if batch.inputs.numel() == 0:
                        raise MirasError(f"the {split} split gives an empty batch")
        except OSError as error:
            if is_cache_path(error.filename, root):  # HOME or the cache is unwritable: not the data
                raise MirasError(cache_problem(error, root)) from None
            problems.append(f"{where}: {_first_line(error)}")
        except Exception as error:  # a corrupt parquet raises pyarrow's own errors
            problems.append(f"{where}: {_first_line(error)}")
    return problems


def _candidates(study: StudyFile, space: SearchSpace) -> list[tuple[str, ModelPoint]]:
    """A sampled point of the space and each anchor (a preset on the space's block, a point file
    as written), as trials run them."""
    found = [("a sampled point", space.sample(1, seed=0)[0])]
    files = anchor_points(study)
    for name in study.sampler.anchor_names:
        if name in files:
            found.append((f"anchor {name}", files[name]))
            continue
        axes = preset(name).model_dump(mode="json", include=set(AXES))
        try:
            found.append((f"anchor {name}", ModelPoint.model_validate({**space.base, **axes})))
        except ValueError:
            continue  # the study reports it as infeasible when it gets there
    points = []
    for label, point in found:
        try:
            points.append((label, study.trial.apply(point)))
        except ValueError:
            continue
    return points


def memory_problems(study: StudyFile, space: SearchSpace) -> list[str]:
    """Why the space's points cannot fit a trial's memory (one line each), or []."""
    problems = []
    for label, point in _candidates(study, space):
        problem = memory_problem(point, study.trial.eval_batch_size, study.trial.memory_limit_gb)
        if problem is not None:
            problems.append(f"{label}: {problem}")
            break  # one is enough to say why; the others are alike
    return problems


BUDGET_FIELDS = ("tokens", "batch_size", "seq_len")
"""The ``train`` fields a study's trial settings may set for every point (``TrialConfig.apply``)."""


def _file_lines(source: str) -> LineMap:
    """The YAML line map of a study or space file (empty for one that is no file)."""
    try:
        return read_yaml(source)[1] if Path(source).is_file() else {}
    except MirasError:
        return {}


def _searched(space: SearchSpace, path: tuple[str, ...]) -> bool:
    """Whether the space's params set the field at ``path`` (in some branch): then each sampled
    point has its own value, else every point has the base's."""
    return any(leaf == path for _, leaf, _ in iter_leaves(space.spec.params))


def _base_field(space: SearchSpace, path: tuple[str, ...]) -> str:
    """Where the value every point of the space has at ``path`` comes from, for a message:
    '<space file> line N (base.block.vocab_size)', its preset, or the default."""
    written = ("base", *path)
    if get_path(space.spec.base, path) is not None:
        line = _file_lines(space.source).get(written)
        return f"{space.source}{f' line {line}' if line else ''} ({'.'.join(written)})"
    if space.spec.preset is not None:
        line = _file_lines(space.source).get(("preset",))
        return f"{space.source}{f' line {line}' if line else ''} (the {'.'.join(path)} of preset {space.spec.preset})"
    return f"{space.source} (the default {'.'.join(path)}: base does not set it)"


def budget_problems(study: StudyFile, space: SearchSpace) -> list[str]:
    """Why no point of the space fits the study's trial budget: the fields the trial settings
    leave to the space (``tokens``, ``batch_size``, ``seq_len``) are the base's where the params
    do not search them, else any value the params may draw; when even the most favourable draw
    (the most tokens, the smallest batch) cannot train one batch, one line at ``trial.tokens``'s
    line, or []. A space where some draws fit is judged point by point, as trials run."""
    given = {name: getattr(study.trial, name) for name in BUDGET_FIELDS}
    left = [name for name, value in given.items() if value is None]
    if not left:
        return []  # all three from the trial: TrialConfig refused it
    drawn = {}
    for name in left:
        bounds = _budget_bounds(space, name)
        if bounds is None:
            return []  # not certain what the space gives it: each point decides
        drawn[name] = bounds
    favourable = {name: high if name == "tokens" else low for name, (low, high, _) in drawn.items()}
    problem = study.trial.budget_problem(**{name: int(value) for name, value in favourable.items()})
    if problem is None:
        return []
    field = next((name for name in BUDGET_FIELDS if given[name] is not None), None)  # tokens first
    line = _file_lines(study.source).get(("trial", field)) if field else None
    where = f"trial.{field}{f' (line {line})' if line else ''}" if field else "trial"
    return [f"{where}: {problem} ({_budget_origins(space, drawn)}){_what_fits(study, space, drawn)}"]


def _budget_bounds(space: SearchSpace, name: str) -> tuple[float, float, str] | None:
    """The smallest and largest value of ``train.<name>`` over the space's draws, and where they
    come from; None when not certain."""
    path = ("train", name)
    if not _searched(space, path):
        value = space.base["train"][name]
        return (value, value, "") if isinstance(value, int) else None
    return number_bounds(space.spec.params, space.base, path)


def _budget_origins(space: SearchSpace, drawn: dict[str, tuple[float, float, str]]) -> str:
    """Where each budget field the space gives comes from, for the message."""
    origins, fixed = [], 0
    for name, (low, _, shown) in drawn.items():
        if shown:
            origins.append(f"{name} takes only {shown} in {_param_line(space, ('train', name))}")
        else:
            fixed += 1
            origins.append(f"{name} {low} from {_base_field(space, ('train', name))}")
    if fixed == len(drawn):
        them = "it" if fixed == 1 else "them"
        return f"{', '.join(origins)}, which the space's params do not search, so every point has {them}"
    return f"at the smallest batch the space can draw: {', '.join(origins)}; no point of the space fits"


def _what_fits(study: StudyFile, space: SearchSpace, drawn: dict[str, tuple[float, float, str]]) -> str:
    """'; a batch_size of at most 2 would fit' for the searched batch size (or sequence length),
    given the other fields at their most favourable; '' when none would or nothing is searched."""
    tokens = study.trial.tokens if study.trial.tokens is not None else int(drawn["tokens"][1])
    batch_size = study.trial.batch_size if study.trial.batch_size is not None else int(drawn["batch_size"][0])
    seq_len = study.trial.seq_len if study.trial.seq_len is not None else int(drawn["seq_len"][0])
    longest = max(spec.seq_len or seq_len for spec in study.trial.data)
    hints = []
    if drawn.get("batch_size", (0, 0, ""))[2] and tokens // longest >= 1:
        hints.append(f"a batch_size of at most {tokens // longest}")
    if drawn.get("seq_len", (0, 0, ""))[2] and longest == seq_len and tokens // batch_size >= 1:
        hints.append(f"a seq_len of at most {tokens // batch_size}")
    return f"; {' or '.join(hints)} would fit" if hints else ""


def _param_line(space: SearchSpace, path: tuple[str, ...]) -> str:
    """'<space file> line N (params.train.batch_size)': where the space's params first set ``path``."""
    where = next(here for here, field, _ in iter_leaves(space.spec.params) if field == path)
    line = ancestor_line(_file_lines(space.source), where)
    return f"{space.source}{f' line {line}' if line else ''} ({'.'.join(where)})"


def vocab_problems(study: StudyFile, space: SearchSpace) -> list[str]:
    """Why no point of the space can read the study's data, where the space cannot choose
    ``block.vocab_size`` (its params do not set it) and the base's is smaller than the data's
    vocabulary (``DataMix.vocab_size``); one line, or []. A space that searches it is judged
    point by point, as trials run."""
    if _searched(space, ("block", "vocab_size")):
        return []
    vocab = int(space.base["block"]["vocab_size"])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            needed = DataMix(list(study.trial.data)).vocab_size
    except Exception:  # data that does not open: data_problems says why
        return []
    if vocab >= needed:
        return []
    return [f"{_base_field(space, ('block', 'vocab_size'))}: block.vocab_size ({vocab}) is smaller "
            f"than the data's vocabulary ({needed} ids), and the space's params do not set it, so "
            f"every point has it; set base.block.vocab_size to at least {needed} (or search it)"]


def preflight(study: StudyFile, space: SearchSpace, *, memory: bool = True) -> None:
    """MirasError listing what every trial of the study would fail on; nothing when all is well."""
    problems = budget_problems(study, space)
    candidates = _candidates(study, space)
    if candidates:  # else no point takes the trial's budget: each trial says why (infeasible)
        problems += data_problems(study, candidates[0][1])
    if not problems:
        problems += vocab_problems(study, space)
    if candidates and memory:
        problems += memory_problems(study, space)
    if problems:
        raise MirasError(
            f"study '{study.name}' cannot run: " + "; ".join(problems)
            + ". Every trial would fail the same way: fix the study file, its space or its data"
        )
