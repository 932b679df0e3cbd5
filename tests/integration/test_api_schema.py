"""Property-based run of the OpenAPI schema (schemathesis): no 5xx and no answer that breaks the schema."""

from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, settings
from requests.adapters import HTTPAdapter
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance

from api.main import create_app
from healthcare.settings import Settings, get_settings
from tests.integration.factories import Account, fresh_ip

# The schema comes from the app object (no server needed to collect); the calls go to the real API.
# Every resource of the API; /metrics and the probes are outside /api/v1 and have their own tests.
RESOURCES = ("auth", "users", "doctors", "patients", "appointments", "invoices", "audit")
schema = schemathesis.openapi.from_dict(create_app(get_settings()).openapi()).include(
    path_regex=f"^/api/v1/({'|'.join(RESOURCES)})"
)


def test_the_run_covers_every_resource_of_the_api() -> None:
    paths = set()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # an operation the schema cannot describe
        paths.add(result.ok().path)
    reached = {path.split("/")[3] for path in paths}
    assert reached == set(RESOURCES), sorted(reached)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_answers_within_its_schema(
    case: schemathesis.Case[Any], admin: Account, settings: Settings
) -> None:
    base = f"http://{settings.api_host}:{settings.api_port}"
    # A client address of its own per case keeps generated logins and registrations from
    # throttling other tests.
    with requests.Session() as session:
        session.mount("http://", SourceAddressAdapter(fresh_ip()))
        case.call_and_validate(
            base_url=base,
            session=session,
            headers=admin.headers,
            checks=[not_a_server_error, response_schema_conformance],
        )


class SourceAddressAdapter(HTTPAdapter):
    """requests' connections leave from one local address (see factories.fresh_ip)."""

    def __init__(self, address: str) -> None:
        self._source = (address, 0)
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, source_address=self._source, **kwargs)
