"""Errors of the platform build: which component failed, and why."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class ComponentBuildError(Exception):
    """A component failed while the platform was being built; names the component and its type."""

    def __init__(self, component: str, type_token: str, cause: BaseException) -> None:
        self.component = component
        self.type_token = type_token
        self.cause = cause
        super().__init__(f"component {component!r} ({type_token}) failed: {type(cause).__name__}: {cause}")


@contextmanager
def building(component: str, type_token: str) -> Iterator[None]:
    try:
        yield
    except ComponentBuildError:
        raise
    except Exception as exc:
        raise ComponentBuildError(component, type_token, exc) from exc


def build(component: str, type_token: str, factory: Callable[[], T]) -> T:
    with building(component, type_token):
        return factory()
