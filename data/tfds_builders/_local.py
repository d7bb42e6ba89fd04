"""The base of the builders over files the project ships."""

from __future__ import annotations

import sys

import tensorflow_datasets as tfds
from etils import epath


class LocalBuilder(tfds.core.GeneratorBasedBuilder):
    """A `GeneratorBasedBuilder` that finds its own module without `importlib_resources`.

    TFDS's default `code_path` resolves the builder's module through
    `importlib_resources`, which it does not install. This class is
    abstract, so TFDS does not register it as a dataset.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(sys.modules[cls.__module__].__file__)
