"""The web dashboard: services, dead letters, breakers, spend, tasks and their timelines."""

from services.dashboard.app import dashboard_app
from services.dashboard.broker_link import BrokerLink

__all__ = ["BrokerLink", "dashboard_app"]
