"""sendstack-bridge: Sendstack tracking, webhooks and commands to and from Kafka."""

__version__ = "0.1.0"
