import factorkit


def test_version_matches_package_metadata() -> None:
    assert factorkit.__version__ == "0.1.0.dev0"


def test_all_names_resolve() -> None:
    for name in factorkit.__all__:
        assert getattr(factorkit, name) is not None, name
