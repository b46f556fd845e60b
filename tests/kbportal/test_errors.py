"""The one error shape for a service's DomainError: its status, code, message, fields and Retry-After."""

from kbportal.errors import DomainError, exception_handler


class Overbooked(DomainError):
    status_code = 409
    code = "overbooked"
    default_detail = "No room left."


def test_a_domain_error_is_answered_with_its_status_code_and_default_message():
    response = exception_handler(Overbooked(), {})
    assert response.status_code == 409
    assert (response.data["error"], response.data["detail"]) == ("overbooked", "No room left.")
    assert "fields" not in response.data and "request_id" in response.data
    assert not response.has_header("Retry-After")


def test_a_domain_error_passes_on_its_message_fields_and_retry_after():
    response = exception_handler(Overbooked("Full until noon.", fields={"room": ["Taken."]}, retry_after=30), {})
    assert response.data["detail"] == "Full until noon."
    assert response.data["fields"] == {"room": ["Taken."]}
    assert response["Retry-After"] == "30"
