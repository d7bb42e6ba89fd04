"""TFDS builders for data the project ships, so `tfds:<name>` works offline.

Catalog datasets (`tfds:mnist`, `tfds:iris`, ...) need no code here: TFDS
downloads and prepares them for users with network access.
"""
