"""Methods built on fields, renderer and trainer: single-object fitting (:mod:`.fit`)."""
