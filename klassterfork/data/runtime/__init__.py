"""Process-level pieces of the input: the tf.data service and the allocator settings."""
