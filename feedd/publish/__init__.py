"""Live candles on NATS JetStream: the publisher fed by the writer's commits, and consumers."""
