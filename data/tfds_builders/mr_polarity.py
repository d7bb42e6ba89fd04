"""`tfds:mr_polarity`: the sentence polarity dataset v1.0 shipped in `data/rt_polarity/`.

The two files are Latin-1 encoded, one sentence a line; they are decoded
explicitly, since they are not valid UTF-8. Lines are split on `\\n` only:
Latin-1 byte 0x85 is U+0085 (NEL), which `str.splitlines` would take for a
line break inside a sentence.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow_datasets as tfds

from data.tfds_builders._local import LocalBuilder

DATA_DIR = Path(__file__).resolve().parents[1] / "rt_polarity"
CLASSES = ("neg", "pos")

CITATION = """@inproceedings{pang2005seeing,
  author = {Bo Pang and Lillian Lee},
  title = {Seeing stars: Exploiting class relationships for sentiment categorization
           with respect to rating scales},
  booktitle = {Proceedings of ACL},
  year = {2005}
}"""


def read_sentences(path: Path) -> list[str]:
    """The non-empty lines of a Latin-1 file, stripped of surrounding whitespace."""
    lines = path.read_bytes().decode("latin-1").split("\n")
    return [line.strip() for line in lines if line.strip()]


class MrPolarity(LocalBuilder):
    """Movie-review sentences (Pang & Lee 2005), each labelled `neg` or `pos`; one `train` split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Sentence polarity dataset v1.0: 5,331 negative and 5,331 positive sentences."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Sentence polarity dataset v1.0 (Pang & Lee 2005), from the files the project ships.",
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=list(CLASSES)),
            }),
            supervised_keys=("text", "label"),
            homepage="https://www.cs.cornell.edu/people/pabo/movie-review-data/",
            citation=CITATION,
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(DATA_DIR)}

    def _generate_examples(self, root: Path):
        for label in CLASSES:
            path = root / f"rt-polarity.{label}"
            for number, sentence in enumerate(read_sentences(path)):
                yield f"{label}-{number}", {"text": sentence, "label": label}
