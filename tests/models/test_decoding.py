"""Beam search on a mocked model whose next-token probabilities are a table of prefixes."""

import numpy as np

from keras_models.decoding import beam_search_decode, greedy_decode
from keras_models.seq2seq import END_ID, PAD_ID

W, A, B = 3, 4, 5
VOCAB = 6


class TableModel:
    """`predict_on_batch` returns, at every step, the distribution the table gives its prefix."""

    def __init__(self, table):
        self.table = table

    def predict_on_batch(self, inputs):
        target_in = np.asarray(inputs["target_in"])
        probs = np.zeros(target_in.shape + (VOCAB,))
        for row, tokens in enumerate(target_in):
            for step in range(len(tokens)):
                prefix = tuple(int(t) for t in tokens[1 : step + 1] if t != PAD_ID)
                for token, p in self.table.get(prefix, {END_ID: 1.0}).items():
                    probs[row, step, token] = p
        return probs


# Greedy: W (0.9), A (0.5), END (0.99). With width 2, END (0.05) finishes at the first step
# and (W, END) at the second, while the open prefix (W, A) has not yet paid for its end.
TABLE = {
    (): {W: 0.9, END_ID: 0.05, B: 0.05},
    (W,): {A: 0.5, END_ID: 0.45, B: 0.05},
    (W, A): {END_ID: 0.99, B: 0.01},
}


def test_beam_search_returns_a_finished_hypothesis_not_an_open_prefix():
    model, source = TableModel(TABLE), np.array([7, 8])
    assert greedy_decode(model, source, max_len=5) == [W, A, END_ID]
    assert beam_search_decode(model, source, beam_width=2, max_len=5) == [W, A, END_ID]
    assert beam_search_decode(model, source, beam_width=2, max_len=5, length_penalty=0.0) == [W, A, END_ID]
    assert beam_search_decode(model, source, beam_width=1, max_len=5) == [W, A, END_ID]


def test_open_prefixes_are_the_fallback_when_nothing_finished():
    model = TableModel({(): {W: 0.6, A: 0.4}, (W,): {W: 0.5, A: 0.5}, (A,): {W: 0.9, A: 0.1}})
    assert greedy_decode(model, np.array([7]), max_len=2) == [W, W]  # 0.30
    assert beam_search_decode(model, np.array([7]), beam_width=2, max_len=2) == [A, W]  # 0.36
