"""Long-running roles: Temporal worker, billing consumer, relay. Import activities, workflows, services."""
