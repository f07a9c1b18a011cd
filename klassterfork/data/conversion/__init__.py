"""Videos and annotations -> sharded TFRecords: readers, decoding, writers, Beam."""
