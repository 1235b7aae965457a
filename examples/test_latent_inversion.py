from latent_inversion import run


def test_add_then_rename() -> None:
    assert run() == {"team": {"ann"}}
