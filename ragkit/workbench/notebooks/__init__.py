"""Run the parameterized notebooks (``notebooks/*.ipynb``) with papermill.

A run leaves a folder with the executed notebook and whatever the notebook writes there
(``output_dir`` is passed to it), so runs can be compared later. Parameters are checked against
the notebook's ``parameters`` cell before a kernel starts: a misspelt name is an error here,
where papermill itself would only warn and run with the default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragkit.core.errors import InvalidInput, NotebookFailed

# The notebooks ship inside the package (links to ../notebooks/ in a checkout), so an installed
# ragkit finds them wherever it runs.
NOTEBOOK_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class NotebookRun:
    name: str
    notebook: Path  # the executed copy, with outputs
    output_dir: Path
    parameters: dict[str, Any]


def available_notebooks(directory: Path = NOTEBOOK_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.ipynb")) if directory.is_dir() else []


def find_notebook(name: str, directory: Path = NOTEBOOK_DIR) -> Path:
    """``evaluate``, ``evaluate.ipynb`` or a path to any notebook."""
    given = Path(name)
    if given.suffix == ".ipynb" and given.is_file():
        return given
    candidate = directory / f"{given.stem if given.suffix == '.ipynb' else name}.ipynb"
    if candidate.is_file():
        return candidate
    known = ", ".join(available_notebooks(directory)) or f"none found in {directory}"
    raise InvalidInput(f"unknown notebook '{name}'; available: {known}", notebook=name)


def parse_value(raw: str) -> Any:
    """A ``-p`` value the way ``papermill -p`` reads it: True/False/None, int, float, else text.

    papermill's own function, so that a value means the same with either command; it is private
    in papermill, hence the import here and a test pinning its behaviour.
    """
    from papermill.cli import _resolve_type

    return _resolve_type(raw)


def parse_parameters(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    return {key: parse_value(value) for key, value in pairs}


def notebook_parameters(path: Path) -> dict[str, Any]:
    """Name → papermill's description (type, default, help) of the notebook's parameters cell."""
    import papermill

    return dict(papermill.inspect_notebook(str(path)))


def check_parameters(path: Path, parameters: Mapping[str, Any]) -> None:
    declared = notebook_parameters(path)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise InvalidInput(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for notebook "
            f"'{path.stem}'; it takes: {', '.join(declared) or 'none'}",
            parameters=unknown,
        )


def run_notebook(
    name: str,
    params: Mapping[str, Any] | None = None,
    output_dir: Path | str | None = None,
    *,
    progress: bool = False,
) -> NotebookRun:
    """Execute notebook ``name`` with ``params``; the executed copy goes to ``output_dir``
    (default ``<data_dir>/runs/<timestamp>-<name>/``). Raises ``NotebookFailed`` if a cell fails."""
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    from ragkit.workbench.evaluation import default_output_dir

    source = find_notebook(name)
    parameters = dict(params or {})
    check_parameters(source, parameters)
    output = Path(output_dir) if output_dir is not None else default_output_dir(source.stem)
    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    if "output_dir" in notebook_parameters(source):
        # The notebook's own files belong beside the executed notebook, unless asked otherwise.
        parameters.setdefault("output_dir", str(output))
    executed = output / source.name
    try:
        papermill.execute_notebook(
            str(source),
            str(executed),
            parameters=parameters,
            progress_bar=progress,
            # The caller's working directory: relative paths in parameters mean what they say.
            cwd=None,
        )
    except PapermillExecutionError as exc:
        raise NotebookFailed(
            f"notebook '{source.stem}' failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue} "
            f"(the executed notebook is {executed})",
            notebook=str(executed),
        ) from exc
    except (DeadKernelError, CellTimeoutError) as exc:
        raise NotebookFailed(
            f"notebook '{source.stem}' stopped: {type(exc).__name__}: {exc} (the executed notebook is {executed})",
            notebook=str(executed),
        ) from exc
    return NotebookRun(name=source.stem, notebook=executed, output_dir=output, parameters=parameters)
