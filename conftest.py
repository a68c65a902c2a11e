"""Settings shared by every test folder of the repository (tests/, plugins/*/tests, ...)."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("OMP_NUM_THREADS", "1")

#: Property tests have no per-example deadline: hypothesis' 200 ms default fails examples
#: on a loaded 2-core CI box by scheduling luck. Set here (not in tests/conftest.py) so that
#: ``pytest plugins/X`` run alone gets it too.
settings.register_profile(
    "aieng", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile("aieng")

#: The anyio backends every ``@pytest.mark.anyio`` test runs on. anyio's own fixture runs
#: each on every installed backend, which with trio installed doubles the suite; CI runs
#: asyncio here, and the tests that matter on trio ask for it themselves
#: (``@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])``).
#: ``AIENG_TEST_BACKENDS=asyncio,trio make test`` runs the whole suite on both.
BACKENDS = tuple(name.strip() for name in
                 os.environ.get("AIENG_TEST_BACKENDS", "asyncio").split(",") if name.strip())


@pytest.fixture(scope="module", params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The backend of this module's anyio tests (see :data:`BACKENDS`)."""
    backend: str = request.param
    return backend
