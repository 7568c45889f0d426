"""Data: readers -> splits -> merged examples -> tokenized, mixed tf.data batches."""
