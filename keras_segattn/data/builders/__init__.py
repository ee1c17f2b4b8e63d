"""tensorflow-datasets builders of keras_segattn (each in its own package directory,
because tfds reads builder metadata next to the module).

Builder names carry a ``segattn_`` prefix so they never collide with tfds' own registry.
"""
