"""Pipelines: steps that depend on steps, as pure rules (definitions, templates, decisions).

The store applies these rules in the transaction that ends a step's dependency; the
service and the clients read and submit definitions.
"""
