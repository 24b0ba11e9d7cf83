"""The pool's rules as pure functions: when replicas agree (`consensus.py`), what work
costs and who is paid (`costs.py`), and whom to trust (`trust.py`). The store applies them
in the transaction that ends a replica or a job."""
