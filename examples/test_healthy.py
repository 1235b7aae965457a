from healthy import run


def test_everything_makes_progress() -> None:
    result = run()
    assert result["pipeline"] == 2 * sum(range(200))
    assert result["pool"] == sum(x * x for x in range(50)) + sum(range(1, 11))
    assert result["timers"] is True
    assert result["buffer"] == sum(range(100))
    assert result["sleepers"] == 4
    assert 1 <= result["limits"] <= 2  # type: ignore[operator]
