import re

import pytest

from pipeline.artifacts import ArtifactError, ArtifactStore, code_digest, fingerprint


def test_published_artifact_is_verified_and_reused(tmp_path):
    store = ArtifactStore(tmp_path)
    fp = fingerprint("ingest", {"seed": 1}, {}, code_digest(["components/ingest.py"]))
    with store.build("ingest", fp, {"note": "x"}, resume=False) as staging:
        (staging / "data.txt").write_text("rows")
        assert store.load("ingest", fp) is None  # nothing finished while building
    artifact = store.load("ingest", fp)
    assert artifact.manifest["files"]["data.txt"]["size"] == 4
    assert artifact.manifest["note"] == "x" and artifact.fingerprint == fp


def test_failed_build_leaves_no_finished_artifact(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError):
        with store.build("train", "f" * 64, {}, resume=True) as staging:
            (staging / "checkpoint").write_text("epoch 3")
            raise RuntimeError("killed")
    assert store.load("train", "f" * 64) is None
    with store.build("train", "f" * 64, {}, resume=True) as staging:  # a resumable build finds its state
        assert (staging / "checkpoint").read_text() == "epoch 3"


def test_corrupted_file_is_detected_and_moved_aside(tmp_path):
    store = ArtifactStore(tmp_path)
    with store.build("ingest", "a" * 64, {}, resume=False) as staging:
        (staging / "data.txt").write_text("rows")
    (store.path("ingest", "a" * 64) / "data.txt").write_text("tampered")
    with pytest.raises(ArtifactError, match="data.txt does not match its manifest"):
        store.load("ingest", "a" * 64)
    assert store.load("ingest", "a" * 64) is None


def test_fingerprint_covers_config_inputs_and_code():
    base = fingerprint("train", {"epochs": 1}, {"preprocess": "p"}, "code")
    assert base != fingerprint("train", {"epochs": 2}, {"preprocess": "p"}, "code")
    assert base != fingerprint("train", {"epochs": 1}, {"preprocess": "q"}, "code")
    assert base != fingerprint("train", {"epochs": 1}, {"preprocess": "p"}, "code2")
    assert base == fingerprint("train", {"epochs": 1}, {"preprocess": "p"}, "code")
    assert re.fullmatch("[0-9a-f]{64}", base)  # a sha256, usable as a directory name
    assert fingerprint("train", {"a": 1, "b": 2}, {}, "c") == fingerprint("train", {"b": 2, "a": 1}, {}, "c")
