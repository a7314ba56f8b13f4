"""The service fixtures serve the security tests too."""

from tests.services.conftest import hosts

__all__ = ["hosts"]
