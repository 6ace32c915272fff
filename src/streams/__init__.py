"""streams: a Kafka-native background-job pipeline."""
