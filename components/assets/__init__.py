"""Small scripts the platform ships into pods (mounted from ConfigMaps); each is tested with the real interpreter."""

from __future__ import annotations

from importlib import resources


def read(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text()
