"""One module per architecture or close family; each registers its models as it is imported.

`keras_models.registry.load_families` imports every public module here, so a
new module is found without being listed anywhere. Modules whose names start
with `_` hold what several architectures share and register nothing.
"""
