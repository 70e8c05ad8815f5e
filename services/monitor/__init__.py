"""The monitor service: joins predictions with ground truth, watches drift, judges canaries."""
