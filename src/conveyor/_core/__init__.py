"""The backend-agnostic kernel: configuration, errors, serialization, task state. Owns no threads."""
