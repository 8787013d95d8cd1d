"""The engines the platform knows, in one place. Adding an engine: one package under ``avatars/engines/``
whose ``ENGINE`` subclasses ``base.Engine``, and one line below.

Everything outside ``avatars/engines/`` asks the engine object (``engine_for(avatar.engine)`` or
``avatar.engine_plugin``) and never compares an avatar's engine to a name
(tests/avatars/test_engine_registry.py).
"""

from __future__ import annotations

from .base import Engine
from .demo import ENGINE as DEMO
from .gaussiantalker import ENGINE as GAUSSIANTALKER
from .synctalk import ENGINE as SYNCTALK

ENGINES: dict[str, Engine] = {engine.name: engine for engine in (GAUSSIANTALKER, SYNCTALK, DEMO)}

DEFAULT_ENGINE = GAUSSIANTALKER.name  # what a new avatar trains with unless told otherwise


def engine_for(name: str) -> Engine:
    """The engine registered as ``name``; KeyError names the known ones."""
    try:
        return ENGINES[name]
    except KeyError:
        raise KeyError(f"Unknown engine {name!r}: the engines are {', '.join(ENGINES)}.") from None


def engine_choices() -> list[tuple[str, str]]:
    """``(name, label)`` of every engine: Avatar.engine's choices (a callable, so that adding an engine
    needs no migration), forms and the API."""
    return [(engine.name, engine.label) for engine in ENGINES.values()]
