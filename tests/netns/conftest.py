"""Fixtures for the netns tier: labs with unique prefixes, always torn down."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from weave_fdp.lab.lab import Lab, lab_namespaces


def unique_prefix() -> str:
    """'t' + 5 random hex digits: never clashes with another helper's namespaces."""
    return "t" + secrets.token_hex(3)[:5]


@pytest.fixture
def lab_prefix() -> Iterator[str]:
    """A fresh lab prefix; whatever carries it is removed after the test (e.g. CLI-built labs)."""
    prefix = unique_prefix()
    yield prefix
    Lab.down_prefix(prefix)


def lab_factory() -> Iterator[Callable[..., Lab]]:
    """Factory: ``make_lab(hosts=3, topology="full", containers=0, up=True, **kw)`` -> a Lab
    with a unique prefix, built unless ``up=False``; every lab is torn down when the
    generator ends and it fails if a namespace is left behind. Wrapped by fixtures of
    any scope (``make_lab`` per test)."""
    labs: list[Lab] = []

    def factory(hosts: int = 3, topology: str = "full", containers: int = 0, up: bool = True,
                **kw: Any) -> Lab:
        lab = Lab(prefix=unique_prefix(), hosts=hosts, topology=topology, containers=containers, **kw)
        labs.append(lab)
        if up:
            lab.up()
        return lab

    yield factory
    left = []
    for lab in labs:
        lab.down()
        left += lab_namespaces(lab.prefix)
    assert not left, f"namespaces left behind: {left}"


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    """A lab factory for one test (see ``lab_factory``)."""
    yield from lab_factory()
