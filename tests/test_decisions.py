def test_superseded_by_a_newer_request_that_ran() -> None:
    from chalicelib.decisions import superseded_by

    ran = [("2026-11-28T09:00:05+00:00", "b"), ("2026-11-28T09:00:01+00:00", "a")]
    assert superseded_by("2026-11-28T09:00:03+00:00", "c", ran) == "b"
    assert superseded_by("2026-11-28T09:00:09+00:00", "c", ran) is None
    assert superseded_by("2026-11-28T09:00:05+00:00", "b", ran) is None  # itself
    assert superseded_by("2026-11-28T09:00:05+00:00", "a", ran) is None  # the same second: not older
    assert superseded_by("", "c", ran) is None and superseded_by("2026-11-28T09:00:03+00:00", "c", [("", "x")]) is None
