"""What a copier reports reaches the supervisor whole: every field of every outcome."""

from __future__ import annotations

import os
import pickle
from dataclasses import fields

from softcopy.copiers.protocol import decode_outcomes, encode_outcomes
from softcopy.sinks.base import COPIED, FAILED, Outcome
from softcopy.sources.scan import Version


def test_every_field_of_an_outcome_survives_the_socket() -> None:
    # Each field set to a value of its own: a field the encoding forgot, or two it swapped,
    # comes back different. A field added to Outcome must be added to the encoding too.
    values = {
        "key": os.fsdecode(b"c/0/not-utf8-\xff"),
        "status": COPIED,
        "version": Version(1, 2, 3, 4),
        "nbytes": 5,
        "error": "an error",
        "errno": 6,
        "digest": "ab" * 32,
        "checked_ns": 7,
        "resumed": 8,
    }
    assert [f.name for f in fields(Outcome)] == list(values)
    outcomes = [Outcome(**values), Outcome("gone", FAILED), Outcome("z", COPIED, Version(0, 0, 0))]
    back = decode_outcomes(pickle.loads(pickle.dumps(encode_outcomes(outcomes))))
    assert back == outcomes
    assert type(back[0].version) is Version and back[1].version is None
