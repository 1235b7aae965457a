from list_loop import run


def test_lookup_then_insert() -> None:
    assert run()
