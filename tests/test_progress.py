"""Progress away from a terminal: whole lines on stderr, never a live bar's carriage returns or escape codes."""

import re

from merkit import progress
from merkit.progress import progress_bar


def test_a_bar_off_a_terminal_logs_whole_lines(capsys, monkeypatch):
    """A tqdm bar redirected to a file was a run of carriage-return fragments; now a line per interval and one at the end."""
    bar = progress_bar(4, "extract text", unit="utt")
    for _ in range(4):
        bar.update(1)
    bar.close()
    bar.close()
    captured = capsys.readouterr()
    assert captured.out == "" and re.fullmatch(r"extract text: 100% 4/4 \[[^\]]*\]\n", captured.err), captured.err
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    bar = progress_bar(None, "transcription", unit="s audio")
    bar.update(1.5)
    bar.update(bar.n)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" [")[0] for line in lines] == ["transcription: 1.5s audio", "transcription: 3.0s audio", "transcription: 3.0s audio"]
    assert progress_bar(4, "off", enabled=False) is None and progress_bar(0, "nothing to do") is None
