"""The engines as the node side knows them: name, label, stand-in or not, default image. The engines
themselves live above this app (avatars/engines/registry.py), which fills this catalogue from
``AvatarsConfig.ready()``, so the nodes' pages, admin and services read engine facts without importing it."""

from __future__ import annotations

from typing import Protocol


class EngineFacts(Protocol):
    name: str
    label: str
    stand_in: bool
    default_image: str | None


ENGINES: dict[str, EngineFacts] = {}  # in the registry's order


def engines_register(engines) -> None:
    """Called once from ``AvatarsConfig.ready()`` with every engine, in the registry's order."""
    ENGINES.clear()
    ENGINES.update((engine.name, engine) for engine in engines)


def engine_label(name: str) -> str:
    return ENGINES[name].label


def real_engines() -> dict[str, EngineFacts]:
    """The engines that need an install on a node (every one but the stand-ins, the demo)."""
    return {name: engine for name, engine in ENGINES.items() if not engine.stand_in}
