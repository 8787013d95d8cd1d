"""GaussianTalker plug-in (KU-CVLAB/GaussianTalker @ 8ec613b): ``commands.py`` builds its command lines,
``parsers.py`` reads its consoles, ``engine.py`` is what the platform asks. Platform-side code only."""

from .engine import GaussianTalker

ENGINE = GaussianTalker()
