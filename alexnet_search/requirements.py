"""pyproject.toml's requirements for a set of extras, one per line: what `make` installs into an
environment before this project itself.

Run as a script (`python alexnet_search/requirements.py dev,tensorflow`), before anything is
installed, so standard library only. Installing the requirements apart from the project lets
`make test` fill both environments at once: an editable install of the project writes
alexnet_search.egg-info into the checkout, and two of those at the same time would race.
"""

import sys
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    if sys.version_info < (3, 11):  # tomllib; pyproject.toml's requires-python says the same
        raise SystemExit(f"error: Python 3.11 or newer is needed, and {sys.executable} is "
                         f"{sys.version.split()[0]}; run make with PYTHON=python3.11 (or newer)")
    import tomllib

    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"error: no extra {', '.join(unknown)} in {pyproject}; it has {', '.join(optional)}")
    return list(project["dependencies"]) + [r for e in extras for r in optional[e]]


if __name__ == "__main__":
    extras = [e for e in (sys.argv[1] if len(sys.argv) > 1 else "").split(",") if e]
    print("\n".join(requirements(Path(__file__).resolve().parent.parent / "pyproject.toml", extras)))
