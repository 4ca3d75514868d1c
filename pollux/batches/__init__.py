"""Batch Mode: batch jobs on both surfaces, run as leased jobs through the same services as online traffic."""
