"""Several workers and instances behaving as one, on PostgreSQL."""
