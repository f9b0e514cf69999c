"""The pure parts of `python -m weave_fdp.bench.sleeve_profile`: a thread's /proc files read
into a sample, two samples into per-thread CPU and wake-up rates."""

from __future__ import annotations

from weave_fdp.bench.sleeve_profile import Sample, parse_task, rows

STAT = ("4242 (sleeve-capture) S 1 4240 4240 0 -1 4194624 120 0 0 0 250 130 0 0 20 0 4 0 "
        "100 2000000 3000 18446744073709551615 1 1 0 0 0 0 0 16781312 17642 0 0 0 -1 1 0 0 0 0 0")
STATUS = "Name:\tsleeve-capture\nvoluntary_ctxt_switches:\t900\nnonvoluntary_ctxt_switches:\t100\n"


def test_a_thread_s_proc_files_give_its_cpu_seconds_and_switches() -> None:
    s = parse_task(STAT, STATUS, "sleeve-capture\n", 100)
    assert s == Sample("sleeve-capture", 3.8, 1000)       # (250 + 130) ticks at 100 Hz
    # a name with a ") " inside cannot shift the fields
    odd = STAT.replace("(sleeve-capture)", "(a) b) c)")
    assert parse_task(odd, STATUS, "a) b) c\n", 100).cpu_s == 3.8


def test_rows_are_rates_over_the_interval_busiest_first_and_skip_threads_gone() -> None:
    before = {"h1/1": Sample("sleeve-capture", 1.0, 100), "h1/2": Sample("sleeve-receive", 2.0, 50),
              "h2/3": Sample("sleeve-timer", 0.0, 0)}
    after = {"h1/1": Sample("sleeve-capture", 1.5, 300), "h1/2": Sample("sleeve-receive", 3.0, 150),
             "h1/9": Sample("new", 9.0, 9)}
    assert rows(before, after, 2.0) == [("h1/2", "sleeve-receive", 50.0, 50.0),
                                       ("h1/1", "sleeve-capture", 25.0, 100.0)]
    assert rows(before, after, 0.0) == []
