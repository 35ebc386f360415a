"""promptopt plugins from outside promptopt: the ``hint_suffix`` optimizer, the ``parrot`` provider."""
