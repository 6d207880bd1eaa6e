import pytest


@pytest.fixture(scope="session", autouse=True)
def igso3_cache_in_tmp(tmp_path_factory):
    """Keep IGSO3 table files out of the user's ~/.cache during tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STARMD_CACHE_DIR", str(tmp_path_factory.mktemp("starmd_cache")))
        yield
