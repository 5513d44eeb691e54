"""The data pipeline: file -> records -> examples -> batches."""
