"""Cluster stages on Ray: prep (data_prep), training, evaluation, registry, batch fusion."""
