"""Long-running processes: the Temporal worker, the billing Kafka consumer, the websocket relay."""
