from babyllama.units import format_clock


def test_format_clock():
    assert [format_clock(s) for s in (None, 0, 5.9, 125, 3600, 4000, 100 * 3600 + 1)] == [
        "--:--", "0:00", "0:05", "2:05", "1:00:00", "1:06:40", "100:00:01"]
