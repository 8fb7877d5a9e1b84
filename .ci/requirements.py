"""Print precision's dependencies and the requirements of the named extras, one per line.

    python .ci/requirements.py test peers rl cluster > requirements.txt

`make` installs these while the kernels compile (see the Makefile), then registers the package
itself with `pip install --no-deps -e .`.
"""
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:                       # Python 3.10: the copy pip carries
    from pip._vendor import tomli as tomllib

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
extras = project.get("optional-dependencies", {})
unknown = [name for name in sys.argv[1:] if name not in extras]
if unknown:
    sys.exit(f"unknown extras: {unknown}; pyproject.toml has {sorted(extras)}")
for requirement in project["dependencies"] + [r for name in sys.argv[1:] for r in extras[name]]:
    print(requirement)
