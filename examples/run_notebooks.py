"""Execute the example notebooks; with ``--write``, store their outputs in the committed files.

    python examples/run_notebooks.py --write                      # regenerate notebooks 1-4
    python examples/run_notebooks.py --backend jax 01_quickstart.ipynb -p steps=20

Each notebook has one code cell tagged ``parameters`` (papermill's convention) holding small
CPU defaults; ``-p name=value`` (a Python literal) adds a cell after it that overrides them,
as papermill does. Notebooks run with nbclient in their own folder (as in Jupyter), on the
backend given by ``--backend`` (default: ``$KERAS_BACKEND``, else TensorFlow).

``--write`` runs with the notebooks' own defaults (refused together with ``-p``) and writes
the outputs back into ``examples/*.ipynb``, normalised so that the files only change when the
results do: stderr (warnings, download progress) dropped, carriage-return progress bars
collapsed to their final line, machine paths replaced, execution counts renumbered, and the
SHA-256 of the code cells recorded in the notebook metadata (``keras_segattn.code_sha256``).
``tests/test_notebooks.py`` checks that record against the code cells, so a notebook whose
code changed without being regenerated fails the tests.

Notebook 5 (Cityscapes with MirroredStrategy) needs the dataset and GPUs; it is not run by
default (name it to run it, with small parameters, as the tests do).
"""

import argparse
import ast
import hashlib
import os
import re
import sys
import tempfile
import time

EXAMPLES = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(EXAMPLES)
NOTEBOOKS = (
    "01_quickstart.ipynb",
    "02_pretrained.ipynb",
    "03_porting_weights.ipynb",
    "04_mechanisms.ipynb",
)
CITYSCAPES_NOTEBOOK = "05_cityscapes_mirrored.ipynb"
WRITE_BACKEND = "tensorflow"
METADATA_KEY = "keras_segattn"
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
# What a committed notebook must not contain: absolute paths of the machine that ran it.
MACHINE_PATH = re.compile(r"(?<![\w.~])(/home/|/Users/|/tmp/|/var/folders/|/work/|/root/|"
                          r"[A-Za-z]:\\Users\\)")


def code_sha256(notebook):
    """SHA-256 of the notebook's code cells (sources joined), injected parameters excluded."""
    digest = hashlib.sha256()
    for cell in notebook.cells:
        if cell.cell_type == "code" and INJECTED_TAG not in cell.metadata.get("tags", []):
            digest.update(cell.source.encode("utf-8") + b"\0")
    return digest.hexdigest()


def parameters_cell_index(notebook, name=""):
    """Index of the single code cell tagged ``parameters``."""
    found = [i for i, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and PARAMETERS_TAG in cell.metadata.get("tags", [])]
    if len(found) != 1:
        raise ValueError(f"{name}: expected exactly one code cell tagged {PARAMETERS_TAG!r}, "
                         f"found {len(found)}.")
    return found[0]


def parameter_names(notebook, name=""):
    """Names assigned in the parameters cell."""
    tree = ast.parse(notebook.cells[parameters_cell_index(notebook, name)].source)
    names = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        for target in targets:
            elements = target.elts if isinstance(target, ast.Tuple) else [target]
            names += [t.id for t in elements if isinstance(t, ast.Name)]
    return names


def inject_parameters(notebook, parameters, name=""):
    """Insert a cell tagged ``injected-parameters`` after the parameters cell (papermill)."""
    if not parameters:
        return notebook
    import nbformat

    known = parameter_names(notebook, name)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise ValueError(f"{name}: unknown parameter(s) {unknown}; the parameters cell "
                         f"defines {known}.")
    source = "# Injected parameters\n" + "".join(
        f"{key} = {value!r}\n" for key, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = [INJECTED_TAG]
    cell.pop("id", None)
    notebook.cells.insert(parameters_cell_index(notebook, name) + 1, cell)
    return notebook


def read(path):
    import nbformat

    return nbformat.read(path, as_version=4)


def execute(path, parameters=None, backend=None, timeout=900):
    """Run a notebook file top to bottom in its folder; returns the executed notebook.

    Raises ``nbclient.exceptions.CellExecutionError`` (with the failing cell's traceback)
    when a cell fails.
    """
    import nbclient

    notebook = inject_parameters(read(path), parameters or {}, os.path.basename(path))
    backend = backend or os.environ.get("KERAS_BACKEND") or WRITE_BACKEND
    previous = {key: os.environ.get(key)
                for key in ("KERAS_BACKEND", "PATH", "PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL")}
    # The kernel is a child process: it inherits the backend, this interpreter's folder
    # first on PATH (ipykernel's kernel.json starts "python") and this checkout on
    # PYTHONPATH, so it imports the same keras_segattn as the caller.
    os.environ["KERAS_BACKEND"] = backend
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (REPO, previous["PYTHONPATH"]) if p)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        client = nbclient.NotebookClient(
            notebook, timeout=timeout, kernel_name="python3", record_timing=False,
            resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
        client.execute()
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    notebook.metadata.setdefault(METADATA_KEY, {})["backend"] = backend
    return notebook


def _collapse_progress(text):
    """What a terminal shows: ``\\b`` erases a character, ``\\r`` returns to the line start."""
    lines = []
    for line in text.split("\n"):
        chars = []
        for char in line:
            if char == "\b":
                if chars:
                    chars.pop()
            else:
                chars.append(char)
        lines.append("".join(chars).split("\r")[-1])
    return "\n".join(lines)


def _machine_paths():
    """Absolute prefixes to hide, longest first: repo, temp dir, home."""
    prefixes = {REPO: ".", os.path.realpath(REPO): ".",
                tempfile.gettempdir(): "<tmp>", os.path.realpath(tempfile.gettempdir()): "<tmp>",
                os.path.expanduser("~"): "~"}
    return sorted(((p, r) for p, r in prefixes.items() if len(p) > 1),
                  key=lambda item: -len(item[0]))


def _scrub(text):
    for prefix, replacement in _machine_paths():
        text = text.replace(prefix, replacement)
    return text


def normalize(notebook):
    """Outputs fit for committing (see the module docstring); in place, returns it."""
    notebook.cells = [c for c in notebook.cells
                      if INJECTED_TAG not in c.metadata.get("tags", [])]
    count = 0
    for cell in notebook.cells:
        tags = cell.metadata.get("tags")
        cell.metadata = {"tags": tags} if tags else {}
        cell.pop("id", None)
        if cell.cell_type != "code":
            continue
        count += 1
        cell.execution_count = count
        outputs = []
        for output in cell.outputs:
            if output.output_type == "stream":
                if output.name == "stderr":
                    continue
                # TensorFlow's INFO lines name temporary folders: noise in a stored notebook.
                output.text = _scrub("".join(
                    line for line in _collapse_progress(output.text).splitlines(True)
                    if not line.startswith("INFO:tensorflow:")))
                if not output.text:
                    continue
                if outputs and outputs[-1].output_type == "stream" and \
                        outputs[-1].name == output.name:
                    outputs[-1].text += output.text
                    continue
            elif output.output_type in ("execute_result", "display_data"):
                output.metadata = {}
                if "text/plain" in output.data:
                    output.data["text/plain"] = _scrub(output.data["text/plain"])
                if output.output_type == "execute_result":
                    output.execution_count = count
            outputs.append(output)
        cell.outputs = outputs
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        METADATA_KEY: {"backend": notebook.metadata.get(METADATA_KEY, {}).get("backend"),
                       "code_sha256": code_sha256(notebook),
                       "regenerate": "python examples/run_notebooks.py --write"},
    }
    notebook.nbformat, notebook.nbformat_minor = 4, 4
    return notebook


def problems(notebook, name=""):
    """What is wrong with a committed notebook (empty list: nothing)."""
    found = []
    record = notebook.metadata.get(METADATA_KEY, {})
    if record.get("code_sha256") != code_sha256(notebook):
        found.append(f"{name}: its code cells changed since the outputs were stored; run "
                     "python examples/run_notebooks.py --write")
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code_cells]
    if counts != list(range(1, len(code_cells) + 1)):
        found.append(f"{name}: code cells were not all executed in order (counts {counts})")
    images = 0
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                found.append(f"{name}: cell {index} stored an error: {output.ename}")
            images += "image/png" in output.get("data", {})
            text = output.get("text", "") + output.get("data", {}).get("text/plain", "")
            if MACHINE_PATH.search(text):
                found.append(f"{name}: cell {index} shows a machine path: "
                             f"{MACHINE_PATH.search(text).group(0)!r}")
    if not images:
        found.append(f"{name}: no picture (image/png output) stored")
    return found


def _literal(text):
    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value  # a bare string


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", default=list(NOTEBOOKS),
                        help="notebook file names in examples/ (default: %(default)s)")
    parser.add_argument("--backend", default=None,
                        help="Keras backend (default: $KERAS_BACKEND, else tensorflow; "
                             "--write always uses tensorflow)")
    parser.add_argument("-p", "--parameter", action="append", type=_literal, default=[],
                        metavar="NAME=VALUE", help="override a parameter (Python literal)")
    parser.add_argument("--write", action="store_true",
                        help="store the normalised outputs in examples/*.ipynb")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    if args.write and args.parameter:
        parser.error("--write stores the notebooks' own defaults; drop -p")
    if args.write and args.backend not in (None, WRITE_BACKEND):
        parser.error(f"--write stores outputs from the {WRITE_BACKEND} backend")
    backend = WRITE_BACKEND if args.write else args.backend
    for name in args.notebooks:
        path = os.path.join(EXAMPLES, os.path.basename(name))
        if not os.path.isfile(path):
            parser.error(f"no notebook {name!r} in {EXAMPLES}")
        start = time.time()
        notebook = execute(path, dict(args.parameter), backend=backend, timeout=args.timeout)
        if args.write:
            import nbformat

            normalize(notebook)
            nbformat.write(notebook, path)
            issues = problems(notebook, name)
            if issues:
                print("\n".join(issues), file=sys.stderr)
                return 1
        print(f"{name}: ran in {time.time() - start:.0f} s"
              f"{' and written' if args.write else ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
