"""Kafka headers the project sets, so consumers can route records without decoding them."""

H_MESSAGE_TYPE = "saga-message-type"
H_PARTICIPANT = "saga-participant"
H_SAGA_ID = "saga-id"
H_MESSAGE_ID = "saga-message-id"
H_CORRELATION_ID = "saga-correlation-id"
H_TRACEPARENT = "traceparent"
