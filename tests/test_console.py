"""console.py: lines printed at once, to the stdout of the moment; durations written short."""

import io
import sys

from alexnet_search.console import format_duration, printer, short


def test_format_duration():
    assert format_duration(59) == "59s" and format_duration(61) == "1m 01s"
    assert format_duration(3 * 3600 + 120) == "3h 02m" and format_duration(2 * 86400 + 3600) == "2d 1h"


def test_short_values_read_as_a_preset_writes_them():
    assert short(True) == "true" and short(False) == "false"
    assert short(0.029115) == "0.0291" and short(4096) == "4096" and short("cosine") == "cosine"


def test_printer_writes_to_the_stream_given_or_to_sys_stdout_as_it_is_when_it_prints(monkeypatch):
    given = io.StringIO()
    printer(given, "[launcher] ")("chief up")
    assert given.getvalue() == "[launcher] chief up\n"
    say = printer()  # made before stdout is replaced, as a module-level default would be
    later = io.StringIO()
    monkeypatch.setattr(sys, "stdout", later)
    say("trial 1/5")
    assert later.getvalue() == "trial 1/5\n"
