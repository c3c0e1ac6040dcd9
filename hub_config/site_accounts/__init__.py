"""Who each person is on each remote site and their projects there: the registry (registry) and the
admins' page and REST API (page, templates/)."""
