"""TFDS builders for data the project ships, so `tfds:<name>` works offline.

Each module here defines a `tfds.core.GeneratorBasedBuilder` over files in
`data/`; importing this package registers them all. Catalog datasets
(`tfds:mnist`, `tfds:imdb_reviews`, ...) need no code here: TFDS downloads
and prepares them for users with network access, and a recipe switches by
changing the name only.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
