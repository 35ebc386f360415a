"""A promptopt optimizer from outside promptopt: ``hint_suffix``."""
