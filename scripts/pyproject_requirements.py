"""Print the project's requirements from pyproject.toml, one a line: ``pyproject_requirements.py [EXTRA...]``.

``make install`` installs these instead of ``pip install -e .``: the project runs from its checkout (manage.py
puts the root on sys.path), so an editable install would only add a build step and a ``talkforge.egg-info``
folder in the working tree.
"""

import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def requirements(extras: list[str]) -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(
            f"pyproject.toml has no extra named {', '.join(unknown)}; it has: {', '.join(sorted(optional))}."
        )
    found = list(project.get("dependencies", []))
    for extra in extras:
        found.extend(optional[extra])
    return found


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1:])))
